"""LPIPS (Zhang et al. 2018, the ``lpips`` package) of each image against the baseline's for the same
prompt and seed: the perceptual distance the cache toolboxes report beside PSNR and SSIM."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..limits import Limit, check_limits, limited
from .base import Metric, Scored

NETS = ("alex", "vgg", "squeeze")
# the smallest image side each backbone's layers LPIPS reads still have a pixel for (probed: one less fails)
MIN_SIDES = {"alex": 31, "vgg": 16, "squeeze": 17}
BACKBONES = ("auto", "pretrained", "random")


@dataclass
class LpipsConfig:
    net: str = "alex"  # alex | vgg | squeeze: the backbone (alex: the paper's recommended forward metric)
    backbone: str = "auto"  # auto: ImageNet weights for real pipelines, random for random ones | pretrained | random
    batch_size: int = limited(8, Limit(1))


def pretrained_backbone(backbone: str, pipeline_weights: str) -> bool:
    """``auto``: ImageNet weights where the images are real ones; random ones score noise anyway."""
    return backbone == "pretrained" or (backbone == "auto" and pipeline_weights == "pretrained")


def weights_label(net: str, pretrained: bool) -> str:
    return f"lpips-v0.1/{net}/{'imagenet' if pretrained else 'random'}"


@functools.lru_cache(maxsize=None)
def lpips_network(net: str, pretrained_backbone: bool, device: torch.device) -> torch.nn.Module:
    """One network per process. The linear heads (v0.1) ship with the package; the ImageNet backbone
    loads through torchvision the normal way; a random backbone is seeded, the same every run."""
    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")  # lpips' pretrained= call
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained_backbone, verbose=False)
    return model.to(device).eval()


def lpips_distances(model: torch.nn.Module, reference: np.ndarray, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Per-image LPIPS for [0, 1] arrays (N, H, W, 3); 0 for identical images, larger is farther."""
    device = next(model.parameters()).device
    found = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x, y = (
                torch.from_numpy(np.ascontiguousarray(a[start : start + batch_size], dtype=np.float32))
                .to(device)
                .permute(0, 3, 1, 2)
                .mul(2)
                .sub(1)
                for a in (reference, images)
            )
            found.append(model(x, y).flatten().double().cpu().numpy())
    return np.concatenate(found)


class Lpips(Metric):
    """Mean per-image LPIPS against the baseline (lower is closer); a budget may bound it."""

    name = "lpips"
    columns = ("lpips",)
    budget_column = "lpips"
    budget_label = "LPIPS"

    @classmethod
    def check(cls, section: Any, chosen: bool) -> None:
        if section.net not in NETS:
            raise ConfigError("lpips.net", section.net, " | ".join(NETS))
        if section.backbone not in BACKBONES:
            raise ConfigError("lpips.backbone", section.backbone, " | ".join(BACKBONES))
        check_limits(section, LpipsConfig, "lpips.")

    @classmethod
    def min_side(cls, section: Any) -> int:
        return MIN_SIDES[section.net]

    def __init__(self, cfg: Any, pipeline_weights: str, device: torch.device):
        self.net = cfg.net
        self.pretrained = pretrained_backbone(cfg.backbone, pipeline_weights)
        self.batch_size = cfg.batch_size
        self.model = lpips_network(cfg.net, self.pretrained, device)

    @property
    def weights(self) -> str:
        return weights_label(self.net, self.pretrained)

    def distances(self, base_images: np.ndarray, images: np.ndarray) -> np.ndarray:
        return lpips_distances(self.model, base_images, images, self.batch_size)

    def score(self, base_images: np.ndarray, images: np.ndarray, prompts: Sequence[str], reference: Any) -> Scored:
        return Scored({"lpips": float(np.mean(self.distances(base_images, images)))}, self.weights)
