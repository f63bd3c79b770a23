"""The config schema (registered in Hydra's ConfigStore) and the checks every run passes first.

``check(cfg)`` runs before anything heavy loads. Single runs call it from a Hydra callback before
Hydra creates the run directory, so a bad value leaves nothing behind; multirun jobs call it
inside the job, where a bad value becomes an ``invalid`` row.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig

from . import accelerators, metrics
from .accelerators import Target
from .errors import ConfigError, exit_2_on_config_error
from .limits import MAX_SEED, Limit, check_limits, limited
from .measure import WarmupPolicy
from .metrics import ClipConfig, LpipsConfig
from .pipelines import architecture_config, is_local_path
from .prompts import load_prompts
from .record import check_summary

CONF_DIR = Path(__file__).resolve().parent / "conf"  # package data: an installed accel_bench finds its configs
FAMILIES = ("sd", "sdxl")
WEIGHTS = ("pretrained", "random")
DTYPES = ("auto", "fp16", "bf16", "fp32")
SCHEDULER_CLASSES = ("DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
# the measuring protocol's settings, in a run's config and the evaluator's alike
SEED = Limit(0, MAX_SEED, meaning="numpy's and torch's seed range")
WARMUP_BATCHES = Limit(0, auto=True)
WARMUP_TOLERANCE = Limit(0, 1, integer=False, above=True, below=True, unit="a relative tolerance", example="0.02")
WARMUP_MAX_BATCHES = Limit(2)
REPEATS = Limit(1, auto=True)
_RESOLUTION = Limit(8, nullable=True, null_means="the pipeline's native size", multiple=8)


@dataclass
class PipelineConfig:
    name: str = MISSING
    label: str = MISSING  # as researchers write it: SD1.5, SD2.1, SDXL
    family: str = MISSING  # sd | sdxl
    architecture: str = MISSING  # bundled config under accel_bench/model_configs/
    weights: str = "pretrained"  # pretrained | random
    model_id: Optional[str] = None  # hub id or local folder, for weights=pretrained
    resolution: int = MISSING
    tome_max_downsample: int = 1  # ToMe's default for this layout (SDXL: no attention at level 1)


@dataclass
class SchedulerConfig:
    name: str = MISSING
    label: str = MISSING
    class_name: str = MISSING
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptsConfig:
    source: str = "builtin"  # builtin | file
    path: Optional[str] = None


AccelConfig = make_dataclass(
    "AccelConfig",
    [("name", str, MISSING), ("methods", List[str], field(default_factory=list))]
    + [
        (key, Optional[typ], limited(None, limit) if limit else None)
        for key, (typ, limit) in accelerators.param_fields().items()
    ],
)
AccelConfig.__module__ = __name__  # pickled by reference into submitit's job processes


@dataclass
class BaselineConfig:
    compile: str = "none"  # none (eager) | a torch.compile mode: the UNet compiled whole, as production serves it
    recipe: str = "none"  # none | an accel config that changes how, not what, is computed (fast: production's)
    whole_step: bool = (
        False  # where it compiles the UNet, compile the whole denoising step (UNet, guidance, scheduler step)
    )


def recipes() -> dict[str, DictConfig]:
    """The accel configs a baseline may run (``baseline.recipe``), by name: those whose methods all
    compute what the pipeline computes, only faster (``Accelerator.same_arithmetic``), read from
    their files as ``accel=<name>`` composes them (a recipe's file is flat: it has no defaults list)."""
    from omegaconf import OmegaConf

    found = {}
    for name in group_options("accel"):
        values = OmegaConf.load(CONF_DIR / "accel" / f"{name}.yaml")
        methods = list(values.get("methods", []))
        if "defaults" not in values and methods and all(accelerators.METHODS[m].same_arithmetic for m in methods):
            found[name] = OmegaConf.merge(OmegaConf.structured(AccelConfig), values)
    return found


@dataclass
class RunConfig:
    pipeline: PipelineConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    accel: AccelConfig = MISSING  # type: ignore[valid-type]
    prompts: PromptsConfig = MISSING
    metrics: List[str] = field(default_factory=lambda: list(metrics.DEFAULT))  # accel_bench.metrics, by name
    clip: ClipConfig = field(default_factory=ClipConfig)
    lpips: LpipsConfig = field(default_factory=LpipsConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    steps: int = limited(50, Limit(1))
    batch_size: int = limited(4, Limit(1))
    num_prompts: int = limited(8, Limit(1))
    seed: int = limited(0, SEED)
    warmup_batches: Any = limited("auto", WARMUP_BATCHES)  # an integer, or auto: until stable on a GPU, 1 on CPU
    warmup_tolerance: float = limited(0.02, WARMUP_TOLERANCE)  # auto: two consecutive batch times within 2%
    warmup_max_batches: int = limited(10, WARMUP_MAX_BATCHES)
    warmup_inherit: bool = True  # auto on a GPU: one warm-up batch for a side measured right after this process's last
    repeats: Any = limited("auto", REPEATS)  # passes over the prompt set; auto: 3 on a GPU, 1 on CPU
    # passes in all, passes that were not clean measured again; auto: twice repeats
    max_repeats: Any = limited("auto", REPEATS)
    interleave: bool = False  # alternate baseline and accelerated passes (re-measures the baseline)
    search_stage: Optional[str] = None  # set by the search sweeper: screen | full (null: a grid job or a run)
    device: str = "auto"
    dtype: str = "auto"
    guidance_scale: float = limited(7.5, Limit(0, integer=False))
    resolution: Optional[int] = limited(None, _RESOLUTION)
    save_images: bool = False
    count_flops: bool = True
    summary_path: str = "outputs/summary.csv"
    cache_dir: str = "~/.cache/accel_bench"


def group_options(group: str) -> list[str]:
    """The options of a config group (``pipeline`` -> ``sd15``, ``sd21``, ...): its files, sorted."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def register_configs() -> None:
    """The schema under ``conf/config.yaml``: every group's values are typed by its field here."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def compose_config(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config a Hydra app of ours (``config``, ``postprocess``, ``evaluate``) gets for these overrides."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, list(overrides))


def compose_run_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The run config ``run.py`` would get for these overrides, outside a Hydra app (bench scripts,
    tests); an override run.py would refuse raises the same ConfigError."""
    from hydra.errors import ConfigCompositionException

    register_configs()
    try:
        return compose_config("config", overrides)
    except ConfigCompositionException:
        from .overrides import check_overrides  # it composes with compose_config

        check_overrides(overrides, "config")  # names the override in one line, where it can
        raise


_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def unet_down_blocks(pipeline: DictConfig) -> int:
    """From the local folder's own UNet config when there is one, else the bundled architecture."""
    if pipeline.weights == "pretrained" and is_local_path(pipeline.model_id):
        unet_config = Path(pipeline.model_id).expanduser() / "unet" / "config.json"
        if unet_config.is_file():
            return len(json.loads(unet_config.read_text())["down_block_types"])
    return len(architecture_config(pipeline.architecture, "unet")["down_block_types"])


@dataclass(frozen=True)
class Checked:
    """What ``check`` built from a run config: the run goes on with these, not with copies."""

    target: Target
    methods: list[accelerators.Accelerator]  # the accelerated side's, in application order
    base_methods: list[accelerators.Accelerator]  # the baseline's: none (eager), torch.compile or a recipe
    prompts: list[str]  # the first num_prompts
    device: str  # resolved: cpu | cuda | cuda:N
    metrics: list[str]  # what scores the images, in accel_bench.metrics' order


def check(cfg: DictConfig) -> "Checked":
    """Raise ConfigError for the first value that cannot run; return what it built to check, which is
    what the run then uses."""
    check_limits(cfg, RunConfig)
    if cfg.max_repeats != "auto" and cfg.repeats != "auto" and cfg.max_repeats < cfg.repeats:
        raise ConfigError("max_repeats", cfg.max_repeats, f"auto or an integer >= repeats ({cfg.repeats})")
    device = check_device(cfg)
    check_writable("summary_path", cfg.summary_path, "a file")
    try:
        check_summary(Path(cfg.summary_path))
    except ValueError as error:
        raise ConfigError("summary_path", cfg.summary_path, f"a new file or an accel_bench summary ({error})") from None
    check_writable("cache_dir", cfg.cache_dir, "a folder")
    chosen_metrics = metrics.check(cfg)
    if cfg.search_stage not in (None, "screen", "full"):
        raise ConfigError("search_stage", cfg.search_stage, "null, screen or full (the search sweeper sets it)")

    pipeline = cfg.pipeline
    if pipeline.family not in FAMILIES:
        raise ConfigError("pipeline.family", pipeline.family, " | ".join(FAMILIES))
    if pipeline.weights not in WEIGHTS:
        raise ConfigError("pipeline.weights", pipeline.weights, " | ".join(WEIGHTS))
    if pipeline.weights == "pretrained":
        if not pipeline.model_id:
            raise ConfigError(
                "pipeline.model_id",
                pipeline.model_id,
                f"a hub id or local folder (pipeline={pipeline.name} has no pretrained weights; use pipeline.weights=random)",
            )
        check_model_id("pipeline.model_id", pipeline.model_id)
    if cfg.scheduler.class_name not in SCHEDULER_CLASSES:
        raise ConfigError("scheduler.class_name", cfg.scheduler.class_name, " | ".join(SCHEDULER_CLASSES))
    timesteps = train_timesteps(pipeline)
    if cfg.steps > timesteps:
        allowed = (
            f"an integer 1..{timesteps} (pipeline={pipeline.name}'s scheduler was trained on {timesteps} timesteps)"
        )
        raise ConfigError("steps", cfg.steps, allowed)

    prompts = load_prompts(cfg.prompts)
    available = len(prompts)
    if cfg.num_prompts > available:
        raise ConfigError(
            "num_prompts",
            cfg.num_prompts,
            f"at most {available} (the prompts={cfg.prompts.source} set has {available})",
        )

    target = Target(
        pipeline=pipeline.name,
        family=pipeline.family,
        down_blocks=unet_down_blocks(pipeline),
        steps=cfg.steps,
        device=device.partition(":")[0],
        capability=_capability(device),
    )
    recipe = None
    if cfg.baseline.recipe != "none":
        known = recipes()
        if cfg.baseline.recipe not in known:
            raise ConfigError("baseline.recipe", cfg.baseline.recipe, " | ".join(["none", *known]))
        recipe = known[cfg.baseline.recipe]
    methods = accelerators.build(cfg.accel, target)
    base_methods = accelerators.baseline_methods(cfg.baseline, target, recipe)
    for method in methods + base_methods:
        least, why = method.warmup_needed()
        if cfg.warmup_batches != "auto" and cfg.warmup_batches < least:
            raise ConfigError("warmup_batches", cfg.warmup_batches, f"auto or >= {least} {why}")
    return Checked(target, methods, base_methods, prompts[: cfg.num_prompts], device, chosen_metrics)


def _capability(device: str) -> Optional[tuple[int, int]]:
    if not device.startswith("cuda"):
        return None
    import torch

    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def check_device(cfg: Any) -> str:
    """``device`` and ``dtype`` (of a run or of the evaluator) on this machine; the resolved device."""
    if cfg.dtype not in DTYPES:
        raise ConfigError("dtype", cfg.dtype, " | ".join(DTYPES))
    if not _DEVICE.match(cfg.device):
        raise ConfigError("device", cfg.device, "auto | cpu | cuda | cuda:N")
    if cfg.device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count()
        index = int(cfg.device.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError("device", cfg.device, f"cpu or auto: this machine has {count} CUDA device(s)")
    device = resolve_device(cfg.device)
    if cfg.dtype == "fp16" and device == "cpu":
        raise ConfigError("dtype", cfg.dtype, "fp32 or bf16 on the CPU (fp16 needs a GPU)")
    return device


def train_timesteps(pipeline: Any) -> int:
    """The timesteps the pipeline's scheduler was trained on: no run can take more steps. A local
    folder's own scheduler config says; a hub id's is its architecture's (1000 for every SD)."""
    folder = Path(str(pipeline.model_id or "")).expanduser()
    local = folder / "scheduler" / "scheduler_config.json"
    if pipeline.weights == "pretrained" and is_local_path(str(pipeline.model_id)) and local.is_file():
        return int(json.loads(local.read_text()).get("num_train_timesteps", 1000))
    return int(architecture_config(pipeline.architecture, "scheduler")["num_train_timesteps"])


def check_writable(key: str, value: str, kind: str) -> None:
    """``value`` can be written as ``kind`` (a file or a folder): what exists of its path is a folder
    this process may write into (checked without creating anything: a refused run writes nothing)."""
    path = Path(value).expanduser().absolute()
    if kind == "a file" and path.is_dir():
        raise ConfigError(key, value, "a file path (this is a folder)")
    existing = path if kind == "a folder" else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not _can_create_in(existing):
        raise ConfigError(key, value, f"{kind} this user can write ({existing} is not a writable folder)")


def _can_create_in(folder: Path) -> bool:
    """A file can be made in ``folder``: tried with an unnamed one that is gone when closed, since root passes
    ``os.access`` everywhere (``/proc`` included)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_model_id(key: str, model_id: str) -> None:
    """A hub id (``org/name``) or a local folder that exists."""
    if is_local_path(model_id) and not Path(model_id).expanduser().is_dir():
        raise ConfigError(
            key, model_id, "an existing local folder (written by save_pretrained) or a hub id like org/name"
        )


def resolve_device(device: str) -> str:
    """``auto``: the GPU if there is one. A sweep task sees only the GPUs its launcher gave it
    (``CUDA_VISIBLE_DEVICES``), so ``cuda`` is that task's own GPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def warmup_policy(cfg: DictConfig, device: str, warm: bool = False) -> WarmupPolicy:
    """``auto`` warms up until stable on a GPU; on a CPU one batch (its timings are not the point).
    ``warm``: the process measured the same pipeline moments ago; with ``warmup_inherit`` an auto
    warm-up on a GPU is then one batch (``WarmupPolicy.inherited``)."""
    batches = 1 if cfg.warmup_batches == "auto" and not device.startswith("cuda") else cfg.warmup_batches
    inherited = warm and cfg.warmup_inherit and batches == "auto"
    return WarmupPolicy(batches, cfg.warmup_tolerance, cfg.warmup_max_batches, inherited)


def resolve_repeats(repeats: Any, device: str) -> int:
    if repeats != "auto":
        return int(repeats)
    return 3 if device.startswith("cuda") else 1


def resolve_max_repeats(cfg: DictConfig, device: str) -> int:
    """The cap on passes when some were not clean: ``auto`` allows as many again as asked for."""
    repeats = resolve_repeats(cfg.repeats, device)
    return max(repeats, 2 * repeats if cfg.max_repeats == "auto" else int(cfg.max_repeats))


class CheckBeforeRun(Callback):
    """Hydra callback: refuse a bad single run before Hydra writes its run directory."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_2_on_config_error():
            check(config)
