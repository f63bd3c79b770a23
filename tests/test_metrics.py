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


def test_lpips_orders_distortions_and_is_the_same_random_network_every_time():
    """Its heads ship with the package; a random backbone is seeded, so random-weight rows agree run to run."""
    from accel_bench.metrics.perceptual import lpips_distances, lpips_network

    a, slight = _pair(seed=1, noise=0.02)
    _, heavy = _pair(seed=1, noise=0.3)
    net = lpips_network("alex", False, torch.device("cpu"))
    near, far, same = (lpips_distances(net, a, b, batch_size=2) for b in (slight, heavy, a))
    assert near.shape == (3,) and np.allclose(same, 0, atol=1e-6)
    assert (near > 0).all() and (far > near).all()
    lpips_network.cache_clear()
    again = lpips_distances(lpips_network("alex", False, torch.device("cpu")), a, heavy, batch_size=3)
    np.testing.assert_allclose(again, far, rtol=1e-5)


def test_every_metric_fills_only_row_columns_and_says_what_scored_it():
    from omegaconf import OmegaConf

    from accel_bench import metrics
    from accel_bench.config import RunConfig
    from accel_bench.metrics.perceptual import pretrained_backbone, weights_label
    from accel_bench.record import COLUMNS

    cfg = OmegaConf.structured(RunConfig)
    a, b = _pair(noise=0.05)
    prompts = ["a cat", "a dog", "a car"]
    built = metrics.build(list(metrics.METRICS), cfg, "random", torch.device("cpu"))
    assert [m.name for m in built] == list(metrics.METRICS) == ["clip", "psnr", "ssim", "lpips"]
    for metric in built:
        scored = metric.score(a, b, prompts, metric.reference(a, prompts))
        assert set(scored.values) == set(metric.columns) <= set(COLUMNS), metric.name
        assert metric.budget_column is None or metric.budget_column in metric.columns
        assert scored.weights == "none" or scored.weights.endswith("/random"), scored.weights  # random pipeline
    by_name = {m.name: m for m in built}
    assert by_name["ssim"].score(a, a, prompts, None).values["ssim_loss"] == pytest.approx(0.0)
    assert by_name["clip"].score(a, a, prompts, None).values["clip_loss"] == pytest.approx(0.0, abs=1e-6)
    # the ImageNet backbone for pretrained pipelines (its download is the user's), labelled so
    assert [pretrained_backbone(b, w) for b in ("auto", "pretrained", "random") for w in ("pretrained", "random")] == [
        True,
        False,
        True,
        True,
        False,
        False,
    ]
    assert weights_label("vgg", True) == "lpips-v0.1/vgg/imagenet"
    assert metrics.BUDGET_METRICS == ("clip", "ssim", "lpips")


@pytest.mark.parametrize(
    "override, key",
    [
        ({"metrics": ["clip", "fid"]}, "metrics"),
        ({"metrics": ["clip", "clip"]}, "metrics"),
        ({"metrics": []}, "metrics"),
        ({"lpips": {"net": "resnet"}}, "lpips.net"),
        ({"lpips": {"backbone": "imagenet"}}, "lpips.backbone"),
        ({"lpips": {"batch_size": 0}}, "lpips.batch_size"),
    ],
)
def test_metric_config_errors_name_the_key(override, key):
    from omegaconf import OmegaConf

    from accel_bench import metrics
    from accel_bench.config import RunConfig
    from accel_bench.errors import ConfigError

    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), override)
    with pytest.raises(ConfigError) as found:
        metrics.check(cfg)
    assert found.value.key == key
    with pytest.raises(ConfigError) as found:
        metrics.check_budget_metric("psnr")  # a PSNR is no loss a budget can bound
    assert "clip | ssim | lpips" in str(found.value)


def test_fid_of_image_folders_is_zero_for_the_same_set_and_grows_with_distortion(tmp_path):
    from PIL import Image

    from accel_bench.metrics.fid import fid, fid_weights_label, image_files

    rng = np.random.default_rng(0)
    clean = rng.random((6, 32, 32, 3))
    sets = {"clean": clean, "slight": np.clip(clean + 0.03 * rng.standard_normal(clean.shape), 0, 1)}
    sets["heavy"] = np.clip(clean + 0.3 * rng.standard_normal(clean.shape), 0, 1)
    for name, images in sets.items():
        (tmp_path / name).mkdir()
        for index, pixels in enumerate(to_uint8(images)):
            Image.fromarray(pixels).save(tmp_path / name / f"{index:05d}.png")
    files = {name: image_files(tmp_path / name) for name in sets}
    cpu = torch.device("cpu")
    same, near, far = (
        fid(files["clean"], files[name], False, cpu, batch_size=4) for name in ("clean", "slight", "heavy")
    )
    assert abs(same) < 1e-3 and 0 < near < far and np.isfinite(far)
    assert fid(files["clean"][:1], files["heavy"], False, cpu) is None  # one image has no covariance
    assert fid_weights_label(False) == "inception-v3/torchvision/random"
