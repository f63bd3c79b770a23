"""Image quality: CLIP score (open_clip) against the prompt, and PSNR / SSIM against the baseline image."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import to_uint8

TINY_CLIP = "accel-bench-tiny-clip"  # a small randomly initialised CLIP for tiny / random-weight runs
TINY_CLIP_CONFIG = Path(__file__).parent / "model_configs" / "clip" / f"{TINY_CLIP}.json"
# DeepCache's evaluation protocol, for pipelines with real weights.
PRETRAINED_CLIP = ("ViT-g-14", "laion2b_s34b_b88k")


@dataclass(frozen=True)
class ClipChoice:
    model: str
    pretrained: Optional[str]  # None: random initialisation (seeded)

    @property
    def weights(self) -> str:
        return "pretrained" if self.pretrained else "random"

    @property
    def label(self) -> str:
        return f"{self.model}/{self.pretrained}" if self.pretrained else self.model


def choose_clip(model: str, pretrained: Optional[str], pipeline_weights: str) -> ClipChoice:
    """``auto``: ViT-g-14 for real weights; for random weights a real CLIP would score noise anyway."""
    if model == "auto":
        return ClipChoice(*PRETRAINED_CLIP) if pipeline_weights == "pretrained" else ClipChoice(TINY_CLIP, None)
    if model == "tiny":
        return ClipChoice(TINY_CLIP, None)
    return ClipChoice(model, pretrained)


class ClipScorer:
    """100 x cosine of L2-normalised image and text embeddings, clamped at 0, per image."""

    def __init__(self, choice: ClipChoice, device: torch.device, batch_size: int = 16):
        import open_clip

        if choice.model == TINY_CLIP:
            open_clip.add_model_config(TINY_CLIP_CONFIG)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a random CLIP is the same random CLIP every run
            model, _, self.preprocess = open_clip.create_model_and_transforms(
                choice.model, pretrained=choice.pretrained
            )
        self.model = model.to(device).eval()
        self.tokenizer = open_clip.get_tokenizer(choice.model)
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def scores(self, images: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        pixels = to_uint8(images)
        result = []
        for start in range(0, len(prompts), self.batch_size):
            batch = slice(start, start + self.batch_size)
            image_input = torch.stack([self.preprocess(Image.fromarray(p)) for p in pixels[batch]]).to(self.device)
            text_input = self.tokenizer(list(prompts[batch])).to(self.device)
            image_features = F.normalize(self.model.encode_image(image_input).float(), dim=-1)
            text_features = F.normalize(self.model.encode_text(text_input).float(), dim=-1)
            result.append((100 * (image_features * text_features).sum(-1)).clamp(min=0).cpu().numpy())
        return np.concatenate(result)


@functools.lru_cache(maxsize=None)
def clip_scorer(choice: ClipChoice, device: torch.device, batch_size: int) -> ClipScorer:
    """One scorer per process and model: a sweep loads ViT-g-14 once."""
    return ClipScorer(choice, device, batch_size)


def psnr_db(reference: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB for [0, 1] images; identical images give +inf."""
    mse = ((reference.astype(np.float64) - images.astype(np.float64)) ** 2).reshape(len(images), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(1.0 / mse)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    reference: np.ndarray, images: np.ndarray, device: torch.device = torch.device("cpu"), chunk: int = 4
) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5), averaged over RGB channels.

    Computed in float64 on the run's ``device``, ``chunk`` images at a time, with the Gaussian
    window applied as two 1-D passes (it is separable): every sweep job pays this, and a 2-D
    window on the CPU took 12 s per 1024 px image on two cores.
    """
    kernel = _gaussian_kernel().to(device)
    rows, columns = kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1)
    c1, c2 = 0.01**2, 0.03**2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, rows, groups=3), columns, groups=3)

    scores = []
    for start in range(0, len(images), chunk):
        x, y = (
            torch.from_numpy(np.ascontiguousarray(a[start : start + chunk], dtype=np.float64))
            .to(device)
            .permute(0, 3, 1, 2)
            for a in (reference, images)
        )
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x**2
        var_y = blur(y * y) - mu_y**2
        cov = blur(x * y) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        scores.append(ssim_map.mean(dim=(1, 2, 3)).cpu().numpy())
    return np.concatenate(scores)
