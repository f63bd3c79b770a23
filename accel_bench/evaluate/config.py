"""The evaluator's config (conf/evaluate.yaml) and its checks: every key checked before anything runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from .. import metrics
from ..config import (
    CONF_DIR,
    REPEATS,
    SEED,
    WARMUP_BATCHES,
    WARMUP_MAX_BATCHES,
    WARMUP_TOLERANCE,
    PipelineConfig,
    PromptsConfig,
    check_device,
    check_model_id,
    check_writable,
)
from ..errors import ConfigError
from ..limits import Limit, check_limits, limited
from ..metrics import ClipConfig, LpipsConfig
from ..pipelines import random_weights_dir
from ..prompts import load_prompts
from .bar import MARGIN
from .manifest import PIPELINES, read_manifest
from .sandbox import SandboxConfig

# quality_budget: the label of budget_metric's loss is said where the metric is known
BUDGET = Limit(
    0, 1, integer=False, below=True, nullable=True, null_means="no budget", unit="a budget on budget_metric's loss"
)


@dataclass
class EvaluateConfig:
    manifest: Optional[str] = None
    code_dir: Optional[str] = None
    baseline: Optional[str] = None
    candidate: Optional[str] = None
    pipeline: Optional[PipelineConfig] = None  # pair mode: the config group option, e.g. pipeline=sd15
    steps: Optional[int] = limited(None, Limit(1, nullable=True, null_means="the file's own"))
    target_speedup: Optional[float] = limited(
        None, Limit(0, integer=False, above=True, nullable=True, null_means="no speed asked", unit="a speedup")
    )
    quality_budget: Optional[float] = limited(None, BUDGET)
    budget_metric: str = "clip"  # pair mode: the metric quality_budget bounds (a manifest's entries name their own)
    out_dir: Optional[str] = None
    models: Dict[str, str] = field(default_factory=lambda: {name: "auto" for name in PIPELINES})
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    num_prompts: int = limited(8, Limit(1))
    batch_size: Optional[int] = limited(None, Limit(1, nullable=True, null_means="the task's"))
    seed: int = limited(0, SEED)  # the global RNG seed each file's process starts with
    # null: a secret drawn per comparison (recorded afterwards)
    input_seed: Optional[int] = limited(None, Limit(0, nullable=True, null_means="a secret drawn per comparison"))
    warmup_batches: Any = limited("auto", WARMUP_BATCHES)  # as in run.py: until stable on a GPU, 1 on CPU
    warmup_tolerance: float = limited(0.02, WARMUP_TOLERANCE)
    warmup_max_batches: int = limited(10, WARMUP_MAX_BATCHES)
    repeats: Any = limited("auto", REPEATS)  # 3 on a GPU, 1 on CPU
    max_repeats: int = limited(12, Limit(1))  # an open verdict is re-measured up to this many passes
    # fidelity floor: every image against the baseline's for the same input
    min_psnr_db: float = limited(25.0, Limit(0, 99, integer=False, above=True, below=True, unit="a PSNR in dB"))
    # a file with a task must beat the baseline cut to its speed by this much pooled PSNR (null: floor only)
    fewer_steps_margin_db: Optional[float] = limited(1.0, MARGIN)
    device: str = "auto"
    dtype: str = "auto"
    timeout_s: int = limited(900, Limit(1))  # for loading a file, and for each batch
    save_images: bool = False
    allow_unsandboxed: bool = False
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    metrics: List[str] = field(default_factory=lambda: ["clip", "ssim", "lpips"])  # PSNR: the image checks' own
    clip: ClipConfig = field(default_factory=ClipConfig)
    lpips: LpipsConfig = field(default_factory=LpipsConfig)
    cache_dir: str = "~/.cache/accel_bench"


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def model_location(pipeline: str, models: Any, cache_dir: str) -> tuple[str, str]:
    """(what ``load_pipeline(model_id=...)`` gets, its weights): hub id, local folder or random build."""
    if pipeline not in PIPELINES:
        raise ConfigError("pipeline", pipeline, " | ".join(PIPELINES))
    spec = OmegaConf.load(CONF_DIR / "pipeline" / f"{pipeline}.yaml")
    choice = models.get(pipeline, "auto")
    if choice == "auto":
        choice = spec.model_id or "random"
    if choice == "random":
        return str(random_weights_dir(spec.architecture, cache_dir)), "random"
    return choice, "pretrained"


def check(cfg: Any) -> str:
    """Which mode the config asks for ("manifest" or "pair"), or a ConfigError naming the key."""
    metrics.check_budget_metric(cfg.budget_metric)
    label = metrics.METRICS[cfg.budget_metric].budget_label
    budget = dataclasses.replace(BUDGET, unit=f"a budget on {label}")
    if not budget.holds(cfg.quality_budget):
        raise ConfigError("quality_budget", cfg.quality_budget, budget.allowed)
    check_limits(cfg, EvaluateConfig)
    if cfg.out_dir is not None:
        check_writable("out_dir", cfg.out_dir, "a folder")
    metrics.check(cfg)
    check_device(cfg)
    for name, choice in cfg.models.items():  # its keys are the pipelines' (another: no such setting)
        if choice not in ("auto", "random"):
            check_model_id(f"models.{name}", choice)
    load_prompts(cfg.prompts)
    if cfg.manifest is not None:
        read_manifest(Path(cfg.manifest))
        if cfg.code_dir is None or not Path(cfg.code_dir).is_dir():
            raise ConfigError("code_dir", cfg.code_dir, "the folder holding {id}_experiment.py files")
        return "manifest"
    for key in ("baseline", "candidate"):
        if cfg[key] is None or not Path(cfg[key]).is_file():
            raise ConfigError(key, cfg[key], "an existing Python file (or give manifest=... code_dir=...)")
    if cfg.pipeline is None:
        raise ConfigError("pipeline", None, f"the pipeline whose model the files get: {' | '.join(PIPELINES)}")
    return "pair"
