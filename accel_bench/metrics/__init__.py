"""Quality metrics as plug-ins: each one module with a ``Metric`` subclass, chosen by the ``metrics`` list.

A run scores its accelerated images with every metric listed; each fills its own row columns and
records which weights scored it (``metric_weights``). A metric that names a ``budget_column`` can be
the quality budget post-process selects under (``budget_metric``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import ConfigError
from .base import Metric, Scored
from .clip import PRETRAINED_CLIP, TINY_CLIP, Clip, ClipChoice, ClipConfig, ClipScorer, choose_clip, clip_scorer
from .fidelity import Psnr, Ssim, psnr_db, ssim
from .perceptual import Lpips, LpipsConfig

METRICS: dict[str, type[Metric]] = {cls.name: cls for cls in (Clip, Psnr, Ssim, Lpips)}
DEFAULT = ["clip", "psnr", "ssim", "lpips"]
BUDGET_METRICS = tuple(name for name, cls in METRICS.items() if cls.budget_column)

__all__ = [
    "BUDGET_METRICS",
    "DEFAULT",
    "METRICS",
    "PRETRAINED_CLIP",
    "TINY_CLIP",
    "ClipChoice",
    "ClipConfig",
    "ClipScorer",
    "LpipsConfig",
    "Metric",
    "Scored",
    "budget_column",
    "build",
    "check",
    "check_budget_metric",
    "choose_clip",
    "clip_scorer",
    "psnr_db",
    "ssim",
]


def check(cfg: Any, key: str = "metrics") -> list[str]:
    """The configured metric names, checked (distinct, known), with their options."""
    names = list(cfg[key])
    if not names or len(set(names)) != len(names) or set(names) - set(METRICS):
        raise ConfigError(key, names, f"a list of distinct names among {', '.join(METRICS)}")
    for name, metric in METRICS.items():
        if name in cfg:
            metric.check(cfg[name], name in names)
    resolution = cfg.get("resolution")
    if resolution is not None:
        least, name = max((METRICS[name].min_side(cfg.get(name)), name) for name in names)
        if resolution < least:
            allowed = f"null or a multiple of 8 >= {-(-least // 8) * 8} (the {name} metric needs images of {least} px or more)"
            raise ConfigError("resolution", resolution, allowed)
    return sorted(names, key=list(METRICS).index)


def check_budget_metric(name: Any, key: str = "budget_metric") -> str:
    if name not in BUDGET_METRICS:
        raise ConfigError(key, name, " | ".join(BUDGET_METRICS))
    return name


def budget_column(name: str) -> str:
    """The row column a budget on metric ``name`` bounds."""
    column = METRICS[name].budget_column
    assert column is not None
    return column


def build(names: Sequence[str], cfg: Any, pipeline_weights: str, device: torch.device) -> list[Metric]:
    """The metrics ``names`` (checked by ``check``), each with its section of ``cfg`` (``cfg.clip``, ...)."""
    return [METRICS[name](cfg.get(name), pipeline_weights, device) for name in names]
