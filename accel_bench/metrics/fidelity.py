"""Fidelity to the baseline's image for the same prompt and seed: PSNR and SSIM, formulas with no weights."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import Metric, Scored


def psnr_db(reference: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB for [0, 1] images; identical images give +inf."""
    mse = ((reference.astype(np.float64) - images.astype(np.float64)) ** 2).reshape(len(images), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(1.0 / mse)


SSIM_WINDOW = 11  # px: Wang et al.'s Gaussian window


def _gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = 1.5) -> torch.Tensor:
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


class Psnr(Metric):
    """Mean per-image PSNR in dB (higher is closer): no budget, since a budget is a loss."""

    name = "psnr"
    columns = ("psnr_db",)

    def __init__(self, cfg: Any, pipeline_weights: str, device: torch.device):
        pass

    @property
    def weights(self) -> str:
        return "none"

    def score(self, base_images: np.ndarray, images: np.ndarray, prompts: Sequence[str], reference: Any) -> Scored:
        return Scored({"psnr_db": float(np.mean(psnr_db(base_images, images)))}, self.weights)


class Ssim(Metric):
    """Mean per-image SSIM; a budget bounds ``ssim_loss`` = 1 - SSIM."""

    name = "ssim"
    columns = ("ssim", "ssim_loss")
    budget_column = "ssim_loss"
    budget_label = "1 - SSIM"

    @classmethod
    def min_side(cls, section: Any) -> int:
        return SSIM_WINDOW  # a valid (unpadded) window

    def __init__(self, cfg: Any, pipeline_weights: str, device: torch.device):
        self.device = device

    @property
    def weights(self) -> str:
        return "none"

    def score(self, base_images: np.ndarray, images: np.ndarray, prompts: Sequence[str], reference: Any) -> Scored:
        value = float(np.mean(ssim(base_images, images, self.device)))
        return Scored({"ssim": value, "ssim_loss": 1.0 - value}, self.weights)
