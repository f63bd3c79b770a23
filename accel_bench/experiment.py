"""One run: the accelerated pipeline measured against its own baseline, fairly, into one result row.

config -> check -> pipeline -> prompts -> baseline measure -> accelerated measure -> metrics -> row
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import accelerators, config, metrics
from .baselines import Baseline, baseline_key, get_or_measure
from .environment import (
    DTYPE_NAMES,
    compile_settings,
    device_name,
    peak_tflops,
    physical_device,
    process_age_s,
    resolve_dtype,
    seed_everything,
    versions,
)
from .errors import ConfigError
from .images import to_uint8
from .measure import Generate, Measurement, count_flops, measure_sides, paired_passes, speedup_ratios
from .pipelines import LoadedPipeline, cached_pipeline, set_scheduler
from .record import Row, Side, append_summary, upsert_summary, write_result

log = logging.getLogger(__name__)

# Keys that change where results go, not what is measured: left out of the run id.
_NOT_IN_RUN_ID = ("summary_path", "cache_dir", "save_images")


def run_id(cfg: DictConfig) -> str:
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in _NOT_IN_RUN_ID}
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PreparedPipeline:
    """The configured pipeline, on its device with its scheduler, and what a call of it needs."""

    loaded: LoadedPipeline
    device: torch.device
    dtype: torch.dtype
    resolution: int


def prepare_pipeline(cfg: DictConfig, gpus_asked: int = 0, device: Optional[str] = None) -> PreparedPipeline:
    """Seed, then load (once per process) and set the scheduler: where a run and every bench script
    that times pipeline calls start, so they time the same pipeline. ``gpus_asked``: the GPUs the
    sweep's launcher gave this task; seeing none then is an error, not a run on the CPU.
    ``device``: as ``config.check`` resolved it (resolved here when not given)."""
    device = torch.device(device or config.resolve_device(cfg.device))
    if gpus_asked and cfg.device != "cpu" and device.type != "cuda":
        raise RuntimeError(
            f"the launcher asked for {gpus_asked} GPU(s) per task (hydra.launcher.gpus_per_node) but this "
            f"job on {socket.gethostname()} sees none (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); it would have measured on the CPU"
        )
    dtype = resolve_dtype(cfg.dtype, device.type)
    seed_everything(cfg.seed)
    loaded = cached_pipeline(cfg.pipeline, str(device), dtype, cfg.cache_dir)
    set_scheduler(loaded.pipe, cfg.scheduler, loaded.scheduler_config)
    return PreparedPipeline(loaded, device, dtype, cfg.resolution or cfg.pipeline.resolution)


def pipeline_call(applied: accelerators.AppliedPipeline, cfg: DictConfig, resolution: int) -> Generate:
    """The configured call of a (possibly accelerated) pipeline, as ``measure`` times it."""

    def generate(prompts: list[str], generators: list[torch.Generator]) -> np.ndarray:
        return applied.call(
            prompt=prompts,
            generator=generators,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
            height=resolution,
            width=resolution,
            output_type="np",
        ).images

    return generate


class ProcessMemory:
    """What a process (a packed task's jobs, one after another) may carry from one measured side to
    the next: its warm state, and the FLOPs per image of each setting it counted. Rows say what they
    inherited (``warmup_inherited``, ``flops_inherited``); everything timed is measured anew."""

    WARM_WITHIN_S = 30.0  # a pipeline measured this recently left the GPU's clocks, allocator and kernels warm

    def __init__(self) -> None:
        self.last_measured: dict[tuple[str, int], float] = {}
        self.flops: dict[str, float] = {}

    def warm(self, device: torch.device, pipe: Any) -> bool:
        ended = self.last_measured.get((str(device), id(pipe)))
        return ended is not None and time.perf_counter() - ended < self.WARM_WITHIN_S

    def measured(self, device: torch.device, pipe: Any) -> None:
        self.last_measured[(str(device), id(pipe))] = time.perf_counter()

    @staticmethod
    def setting(cfg: DictConfig, methods: list[accelerators.Accelerator], resolution: int) -> str:
        """What a side's FLOPs per image depend on: the architecture, the call and the methods'
        parameters; not the batch, prompts, seed or dtype."""
        values = dict(
            pipeline=[cfg.pipeline[k] for k in ("family", "architecture", "model_id")],
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
            resolution=resolution,
            methods=[type(m).__name__ for m in methods],
            params=accelerators.params_record(methods),
        )
        return json.dumps(values, sort_keys=True, default=str)


_memory = ProcessMemory()


def _measure(
    sides: list[tuple[str, list[accelerators.Accelerator]]],
    pipe: Any,
    prompts: list[str],
    cfg: DictConfig,
    device: torch.device,
    resolution: int,
    interleave: bool,
) -> list[Measurement]:
    """Each side is the pipeline with its accelerators applied, for each of its passes. Measured one
    side at a time, a side that does not compile inherits the process's warm state; a setting whose FLOPs the process counted is not counted again."""

    def opener(methods: list[accelerators.Accelerator]):
        @contextmanager
        def opened():
            with accelerators.applied(pipe, methods) as applied:
                yield pipeline_call(applied, cfg, resolution), applied.reset

        return opened

    compiling = [accelerators.compiles(methods) for _, methods in sides]
    warm = not interleave and not any(compiling) and _memory.warm(device, pipe)
    settings = [ProcessMemory.setting(cfg, methods, resolution) for _, methods in sides]
    # a side with a method that changes only how it computes is counted without it: the counting mode
    # does not see inside compiled graphs (and would compile them again), nor count int8 matmuls as work
    counted = [cfg.count_flops and not any(m.same_arithmetic for m in methods) for _, methods in sides]
    measured = measure_sides(
        [opener(methods) for _, methods in sides],
        prompts,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        warmup=config.warmup_policy(cfg, str(device), warm),
        device=device,
        repeats=config.resolve_repeats(cfg.repeats, str(device)),
        max_repeats=config.resolve_max_repeats(cfg, str(device)),
        interleave=interleave,
        count_flops=[c and s not in _memory.flops for c, s in zip(counted, settings)],
        labels=[label for label, _ in sides],
    )
    _memory.measured(device, pipe)
    found = []
    for side, setting, count, (_, methods) in zip(measured, settings, counted, sides):
        if count and side.flops_per_image is None and setting in _memory.flops:
            side = dataclasses.replace(side, flops_per_image=_memory.flops[setting], flops_inherited=True)
        elif count and side.flops_per_image is not None:
            _memory.flops[setting] = side.flops_per_image
        elif cfg.count_flops and not count:  # its eager equivalent runs the same arithmetic
            eager = [m for m in methods if not m.same_arithmetic]
            key = ProcessMemory.setting(cfg, eager, resolution)
            inherited = key in _memory.flops
            if not inherited:
                _memory.flops[key], spent = count_flops(opener(eager), prompts, cfg.batch_size, cfg.seed, device)
                side = dataclasses.replace(side, flops_s=spent)
            side = dataclasses.replace(
                side, flops_per_image=_memory.flops[key], flops_eager=True, flops_inherited=inherited
            )
        found.append(side)
    return found


def _save_images(run_dir: Path, sides: dict[str, Measurement]) -> None:
    from PIL import Image

    for side, measured in sides.items():
        folder = run_dir / "images" / side
        folder.mkdir(parents=True, exist_ok=True)
        for index, pixels in enumerate(to_uint8(measured.images)):
            Image.fromarray(pixels).save(folder / f"{index:04d}.png")


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    return numerator / denominator if numerator is not None and denominator else None


# A job's wall time runs from the end of the process's previous job, or for its first job from the
# process's start: imports and start-up are the price of every fresh process, and a sweep's
# accounting of where its time went (sweep.jobs.sweep_cost) must include them.
_last_job_end = time.perf_counter() - process_age_s()


def run(cfg: DictConfig, run_dir: Path, sweep_dir: Optional[Path] = None, gpus_asked: int = 0) -> Row:
    """Measure one configuration; always returns a row (ok, failed or invalid), written to disk.

    In a sweep (``sweep_dir``), baselines are shared through the sweep folder and the row also goes
    to the sweep's summary, one row per job.
    """
    from .sweep.layout import SweepLayout

    global _last_job_end
    started = _last_job_end
    identity = dict(
        run_id=run_id(cfg),
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        pipeline=cfg.pipeline.name,
        pipeline_label=cfg.pipeline.label,
        family=cfg.pipeline.family,
        model_id=cfg.pipeline.model_id,
        weights=cfg.pipeline.weights,
        scheduler=cfg.scheduler.name,
        scheduler_class=cfg.scheduler.class_name,
        scheduler_label=cfg.scheduler.label,
        scheduler_kwargs=OmegaConf.to_container(cfg.scheduler.kwargs, resolve=True),
        accel_methods=[m for m in accelerators.METHODS if m in cfg.accel.methods],
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        accel=cfg.accel.name,
        baseline=accelerators.baseline_name(cfg.baseline),
        seed=cfg.seed,
        guidance_scale=cfg.guidance_scale,
        search_stage=cfg.search_stage,
        versions=versions(),
        host=socket.gethostname(),
        run_dir=str(run_dir),
    )
    layout = SweepLayout(sweep_dir) if sweep_dir is not None else None
    try:
        checked = config.check(cfg)
    except ConfigError as error:
        row = Row(status="invalid", error=str(error), **identity)
    else:
        try:
            row = _run_checked(cfg, run_dir, checked, identity, layout, gpus_asked)
        except Exception as error:  # one failed job must not end a sweep: it becomes a row
            if _exiting(error):
                raise  # told to stop, not failed: a requeued task runs the job again and records it then
            log.exception("run failed")
            message = " ".join(f"{type(error).__name__}: {error}".split())
            row = Row(status="failed", error=message, **identity)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    row.job_s = time.perf_counter() - started
    write_result(run_dir, row, OmegaConf.to_container(cfg, resolve=True))
    append_summary(Path(cfg.summary_path), row)
    if layout is not None:
        upsert_summary(layout.summary, row)
    _last_job_end = time.perf_counter()
    return row


def _exiting(error: BaseException) -> bool:
    """Whether ``error`` was raised while the process unwound a request to stop: submitit's SystemExit on
    preemption or Ctrl-C lands wherever the run was, and cleanup there (a ``finally``, OmegaConf's flag
    reset) can raise another error in its place. Such a run did not fail, and a row would say it had."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (SystemExit, KeyboardInterrupt)):
            return True
        seen.add(id(error))
        error = error.__context__
    return False


def _run_checked(
    cfg: DictConfig, run_dir: Path, checked: config.Checked, identity: dict[str, Any], layout: Any, gpus_asked: int
) -> Row:
    prepared = prepare_pipeline(cfg, gpus_asked, checked.device)
    loaded, device, dtype, resolution = prepared.loaded, prepared.device, prepared.dtype, prepared.resolution
    pipe, prompts, methods, base_methods = loaded.pipe, checked.prompts, checked.methods, checked.base_methods
    identity = {**identity, "batch_size": min(cfg.batch_size, len(prompts))}  # fewer prompts: one smaller batch
    compiled_under = compile_settings()  # read once: for the baseline's key and the row
    scorers = metrics.build(checked.metrics, cfg, cfg.pipeline.weights, device)
    log.info(
        "%s (%s weights, from %s) | %s %d steps | %d prompts, batch %d | %s on %s %s, against the %s baseline",
        cfg.pipeline.label,
        cfg.pipeline.weights,
        loaded.source,
        cfg.scheduler.label,
        cfg.steps,
        len(prompts),
        identity["batch_size"],
        cfg.accel.name,
        device,
        DTYPE_NAMES[dtype],
        identity["baseline"],
    )

    def measure_baseline() -> Baseline:
        (measured,) = _measure([("baseline", base_methods)], pipe, prompts, cfg, device, resolution, interleave=False)
        return Baseline(measured, _references(scorers, measured.images, prompts))

    if cfg.interleave:  # the baseline is re-measured, its passes alternating with the accelerated ones
        base_side, accel_side = _measure(
            [("baseline", base_methods), (cfg.accel.name, methods)],
            pipe,
            prompts,
            cfg,
            device,
            resolution,
            interleave=True,
        )
        baseline, baseline_cached = Baseline(base_side, _references(scorers, base_side.images, prompts)), False
    else:
        key = baseline_key(
            pipeline={k: cfg.pipeline[k] for k in ("family", "weights", "architecture", "model_id")},
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            prompts=prompts,
            metrics={m.name: m.weights for m in scorers},
            device=physical_device(device),
            dtype=DTYPE_NAMES[dtype],
            resolution=resolution,
            baseline=identity["baseline"],
            # a recipe is named, not versioned: what it ran is part of the key
            **({"recipe": accelerators.params_record(base_methods)} if cfg.baseline.recipe != "none" else {}),
            # a graph built under other inductor settings is another baseline
            **({"compile": compiled_under} if accelerators.compiles(base_methods) and compiled_under else {}),
            **{
                k: cfg[k]
                for k in (
                    "steps",
                    "batch_size",
                    "seed",
                    "warmup_batches",
                    "warmup_tolerance",
                    "warmup_max_batches",
                    "warmup_inherit",
                    "repeats",
                    "max_repeats",
                    "guidance_scale",
                    "count_flops",
                )
            },
        )
        # once per process, and once per sweep across its processes
        baseline, baseline_cached = get_or_measure(key, measure_baseline, layout.baselines if layout else None)
        (accel_side,) = _measure([(cfg.accel.name, methods)], pipe, prompts, cfg, device, resolution, interleave=False)
    base, accel = baseline.measurement, accel_side
    scoring_began = time.perf_counter()
    scored = [m.score(base.images, accel.images, prompts, baseline.references.get(m.name)) for m in scorers]
    scoring_s = time.perf_counter() - scoring_began
    if cfg.save_images:
        _save_images(run_dir, {"baseline": base, "accel": accel})

    base_passes, accel_passes = paired_passes(base, accel, interleaved=bool(cfg.interleave))
    ratios = speedup_ratios(base, accel, interleaved=bool(cfg.interleave))
    peak = peak_tflops(device_name(device), DTYPE_NAMES[dtype])
    accelerated = Side.of(accel, compiled=accelerators.compiles(methods), passes=accel_passes).rated(peak)
    base_side = Side.of(base, compiled=accelerators.compiles(base_methods), passes=base_passes).rated(peak)
    row = Row(
        status="ok",
        num_images=accel.num_images,
        resolution=resolution,
        accel_params=accelerators.params_record(methods),
        device=physical_device(device),
        device_name=device_name(device),
        host_cpu=device_name(torch.device("cpu")),
        dtype=DTYPE_NAMES[dtype],
        model_source=loaded.source,
        pipeline_load_s=loaded.load_s,
        baseline_cached=baseline_cached,
        repeats=len(accel_passes),
        repeats_asked=config.resolve_repeats(cfg.repeats, str(device)),
        interleaved=bool(cfg.interleave),
        speedup=statistics.median(ratios),
        speedup_min=min(ratios),
        speedup_max=max(ratios),
        flops_ratio=_ratio(base.flops_per_image, accel.flops_per_image),
        metric_weights={m.name: found.weights for m, found in zip(scorers, scored)},
        scoring_s=scoring_s,
        isolation=accel.isolation,
        accelerated=accelerated,
        base=base_side,
        compile_settings=compiled_under if accelerators.compiles([*methods, *base_methods]) else {},
        **identity,
    )
    for found in scored:
        row.put(found.values)
    row.disturbed = row.disturbance()
    return row


def _references(scorers: list[metrics.Metric], images: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
    """What each metric computes once from a baseline's images, kept with the baseline."""
    found = {m.name: m.reference(images, prompts) for m in scorers}
    return {name: value for name, value in found.items() if value is not None}
