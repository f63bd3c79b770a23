from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from accel_bench.images import to_uint8
from accel_bench.metrics import PRETRAINED_CLIP, TINY_CLIP, ClipChoice, ClipScorer, choose_clip, psnr_db, ssim


def _pair(seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    a = rng.random((3, 40, 48, 3))
    return a, np.clip(a + noise * rng.standard_normal(a.shape), 0, 1)


def test_ssim_matches_scikit_image_gaussian_ssim():
    a, b = _pair()
    expected = [
        structural_similarity(
            a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
        )
        for i in range(len(a))
    ]
    np.testing.assert_allclose(ssim(a, b), expected, rtol=1e-10)
    np.testing.assert_allclose(ssim(a, b, chunk=2), expected, rtol=1e-10)  # chunks that split the images unevenly
    np.testing.assert_allclose(ssim(a, a), 1.0)


def test_psnr_per_image():
    a = np.zeros((2, 4, 4, 3))
    b = a.copy()
    b[0] += 0.1  # mse 0.01 -> 20 dB
    np.testing.assert_allclose(psnr_db(a, b), [20.0, np.inf])


def test_to_uint8_handles_nan_from_fp16_overflow():
    assert to_uint8(np.array([np.nan, 0.5, 2.0])).tolist() == [0, 128, 255]


def test_clip_choice_follows_the_weights():
    assert choose_clip("auto", None, "pretrained") == ClipChoice(*PRETRAINED_CLIP)
    assert choose_clip("auto", "ignored", "random") == ClipChoice(TINY_CLIP, None)
    assert choose_clip("ViT-B-32", None, "pretrained").weights == "random"
    assert choose_clip("ViT-B-32", "openai", "random").label == "ViT-B-32/openai"


def test_random_clip_score_is_deterministic_and_in_range():
    images, _ = _pair(noise=0.0)
    images = np.concatenate([images, np.zeros((1, 40, 48, 3))])
    prompts = ["a cat", "a dog", "a car", "a tree"]
    first = ClipScorer(ClipChoice(TINY_CLIP, None), torch.device("cpu"), batch_size=3).scores(images, prompts)
    second = ClipScorer(ClipChoice(TINY_CLIP, None), torch.device("cpu"), batch_size=16).scores(images, prompts)
    assert first.shape == (4,)
    np.testing.assert_allclose(first, second, rtol=1e-5)  # same random CLIP each time, batching aside
    assert ((first >= 0) & (first <= 100)).all()
    assert len(set(np.round(first, 4))) > 1


def test_unknown_clip_model_fails_loudly():
    with pytest.raises(RuntimeError):
        ClipScorer(ClipChoice("no-such-clip-model", None), torch.device("cpu"))
