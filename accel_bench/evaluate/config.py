"""The evaluator's config (conf/evaluate.yaml) and its checks: every key checked before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from .. import metrics
from ..config import CONF_DIR, PipelineConfig, PromptsConfig, check_device, check_model_id, check_writable
from ..errors import ConfigError
from ..metrics import ClipConfig, LpipsConfig
from ..pipelines import random_weights_dir
from ..prompts import load_prompts
from .bar import check_margin
from .manifest import PIPELINES, read_manifest
from .sandbox import SandboxConfig


@dataclass
class EvaluateConfig:
    manifest: Optional[str] = None
    code_dir: Optional[str] = None
    baseline: Optional[str] = None
    candidate: Optional[str] = None
    pipeline: Optional[PipelineConfig] = None  # pair mode: the config group option, e.g. pipeline=sd15
    steps: Optional[int] = None
    target_speedup: Optional[float] = None
    quality_budget: Optional[float] = None
    budget_metric: str = "clip"  # pair mode: the metric quality_budget bounds (a manifest's entries name their own)
    out_dir: Optional[str] = None
    models: Dict[str, str] = field(default_factory=lambda: {name: "auto" for name in PIPELINES})
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    num_prompts: int = 8
    batch_size: Optional[int] = None
    seed: int = 0  # the global RNG seed each file's process starts with
    input_seed: Optional[int] = None  # null: a secret drawn per comparison (recorded afterwards)
    warmup_batches: Any = "auto"  # as in run.py: until stable on a GPU, 1 on CPU
    warmup_tolerance: float = 0.02
    warmup_max_batches: int = 10
    repeats: Any = "auto"  # 3 on a GPU, 1 on CPU
    max_repeats: int = 12  # an open verdict is re-measured up to this many passes
    min_psnr_db: float = 25.0  # fidelity floor: every image against the baseline's for the same input
    # a file with a task must beat the baseline cut to its speed by this much pooled PSNR (null: floor only)
    fewer_steps_margin_db: Optional[float] = 1.0
    device: str = "auto"
    dtype: str = "auto"
    timeout_s: int = 900  # for loading a file, and for each batch
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
    for key, low in (("num_prompts", 1), ("timeout_s", 1), ("max_repeats", 1)):
        if cfg[key] < low:
            raise ConfigError(key, cfg[key], f"an integer >= {low}")
    for key, low in (("warmup_batches", 0), ("repeats", 1)):
        if cfg[key] != "auto" and (not isinstance(cfg[key], int) or cfg[key] < low):
            raise ConfigError(key, cfg[key], f"auto or an integer >= {low}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError("batch_size", cfg.batch_size, "null (the task's) or an integer >= 1")
    if not 0 < cfg.min_psnr_db < 99:
        raise ConfigError("min_psnr_db", cfg.min_psnr_db, "a PSNR in dB between 0 and 99")
    check_margin(cfg.fewer_steps_margin_db)
    if cfg.out_dir is not None:
        check_writable("out_dir", cfg.out_dir, "a folder")
    metrics.check(cfg)
    metrics.check_budget_metric(cfg.budget_metric)
    check_device(cfg)
    if cfg.steps is not None and cfg.steps < 1:
        raise ConfigError("steps", cfg.steps, "null (the file's own) or an integer >= 1")
    if cfg.target_speedup is not None and not cfg.target_speedup > 0:
        raise ConfigError("target_speedup", cfg.target_speedup, "null (no speed asked) or a speedup > 0")
    if cfg.quality_budget is not None and not 0 <= cfg.quality_budget < 1:
        label = metrics.METRICS[cfg.budget_metric].budget_label
        raise ConfigError("quality_budget", cfg.quality_budget, f"null (no budget) or a budget on {label} in [0, 1)")
    if cfg.input_seed is not None and cfg.input_seed < 0:
        raise ConfigError("input_seed", cfg.input_seed, "null (a secret drawn per comparison) or an integer >= 0")
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
