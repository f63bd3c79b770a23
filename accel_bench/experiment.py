"""One run: the accelerated pipeline measured against its own baseline, fairly, into one result row.

config -> check -> pipeline -> prompts -> baseline measure -> accelerated measure -> metrics -> row
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import random
import socket
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__, accelerators, config, sweeps
from .errors import ConfigError
from .measure import Generate, Measurement, measure_sides, speedup_ratios
from .baselines import Baseline, baseline_key, get_or_measure
from .metrics import choose_clip, clip_scorer, psnr_db, ssim, to_uint8
from .pipelines import LoadedPipeline, cached_pipeline, resolve_dtype, set_scheduler
from .prompts import load_prompts
from .results import ResultRow, append_summary, fmt, upsert_summary, write_result

log = logging.getLogger(__name__)

SWEEP_SUMMARY = "summary.csv"  # <sweep dir>/summary.csv: one row per job

# Keys that change where results go, not what is measured: left out of the run id.
_NOT_IN_RUN_ID = ("summary_path", "cache_dir", "save_images")
_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_PACKAGES = ("torch", "diffusers", "transformers", "open_clip_torch", "DeepCache", "tomesd", "tgate")


def run_id(cfg: DictConfig) -> str:
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in _NOT_IN_RUN_ID}
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def versions() -> dict[str, str]:
    found = {"accel_bench": __version__, "python": platform.python_version(), "cuda": torch.version.cuda or "none"}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def physical_device(device: torch.device) -> str:
    """The device as the machine numbers it: a sweep task that sees only GPU 1 (``CUDA_VISIBLE_DEVICES=1``)
    calls it ``cuda``, its row says ``cuda:1``, and its baseline is not shared with GPU 0's."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return f"cuda:{visible[index] if index < len(visible) else index}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@dataclass(frozen=True)
class PreparedPipeline:
    """The configured pipeline, on its device with its scheduler, and what a call of it needs."""

    loaded: LoadedPipeline
    device: torch.device
    dtype: torch.dtype
    resolution: int


def prepare_pipeline(cfg: DictConfig, gpus_asked: int = 0) -> PreparedPipeline:
    """Seed, then load (once per process) and set the scheduler: where a run and every bench script
    that times pipeline calls start, so they time the same pipeline. ``gpus_asked``: the GPUs the
    sweep's launcher gave this task; seeing none then is an error, not a run on the CPU."""
    device = torch.device(config.resolve_device(cfg.device))
    if gpus_asked and cfg.device != "cpu" and device.type != "cuda":
        raise RuntimeError(f"the launcher asked for {gpus_asked} GPU(s) per task (hydra.launcher.gpus_per_node) but this "
                           f"job on {socket.gethostname()} sees none (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); it would have measured on the CPU")
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


def _measure(sides: list[tuple[str, list[accelerators.Accelerator]]], pipe: Any, prompts: list[str], cfg: DictConfig,
             device: torch.device, resolution: int, interleave: bool) -> list[Measurement]:
    """Each side is the pipeline with its accelerators applied, for each of its passes."""

    def opener(methods: list[accelerators.Accelerator]):
        @contextmanager
        def opened():
            with accelerators.applied(pipe, methods) as applied:
                yield pipeline_call(applied, cfg, resolution), applied.reset

        return opened

    return measure_sides(
        [opener(methods) for _, methods in sides],
        prompts,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        warmup=config.warmup_policy(cfg, str(device)),
        device=device,
        repeats=config.resolve_repeats(cfg.repeats, str(device)),
        interleave=interleave,
        # a compiled side is not counted: the counting mode does not see inside compiled graphs, and
        # its one-image call would compile the graphs again for that shape
        count_flops=[cfg.count_flops and not any(m.name == "compile" for m in methods) for _, methods in sides],
        labels=[label for label, _ in sides],
    )


def _save_images(run_dir: Path, sides: dict[str, Measurement]) -> None:
    from PIL import Image

    for side, measured in sides.items():
        folder = run_dir / "images" / side
        folder.mkdir(parents=True, exist_ok=True)
        for index, pixels in enumerate(to_uint8(measured.images)):
            Image.fromarray(pixels).save(folder / f"{index:04d}.png")


def _compile_s(measured: Measurement) -> float:
    """What compilation cost: it runs in the first (warm-up) calls, so the warm-up's time beyond as
    many batches at the measured median."""
    return max(0.0, sum(measured.warmup_times_s) - len(measured.warmup_times_s) * measured.batch_time_median_s)


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    return numerator / denominator if numerator is not None and denominator else None


def _process_age_s() -> float:
    """Seconds since this process started (Linux's /proc), else since this module was imported."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


# A job's wall time runs from the end of the process's previous job, or for its first job from the
# process's start: imports and start-up are the price of every fresh process, and a sweep's
# accounting of where its time went (sweeps.sweep_cost) must include them.
_last_job_end = time.perf_counter() - _process_age_s()


def run(cfg: DictConfig, run_dir: Path, sweep_dir: Optional[Path] = None, gpus_asked: int = 0) -> ResultRow:
    """Measure one configuration; always returns a row (ok, failed or invalid), written to disk.

    In a sweep (``sweep_dir``), baselines are shared through ``<sweep dir>/baselines`` and the
    row also goes to ``<sweep dir>/summary.csv``, one row per job.
    """
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
        versions=versions(),
        host=socket.gethostname(),
        run_dir=str(run_dir),
    )
    try:
        target = config.check(cfg)
    except ConfigError as error:
        row = ResultRow(status="invalid", error=str(error), **identity)
    else:
        try:
            row = _run_checked(cfg, run_dir, target, identity, sweep_dir, gpus_asked)
        except Exception as error:  # one failed job must not end a sweep: it becomes a row
            log.exception("run failed")
            message = " ".join(f"{type(error).__name__}: {error}".split())
            row = ResultRow(status="failed", error=message, **identity)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    row.job_s = time.perf_counter() - started
    write_result(run_dir, row, OmegaConf.to_container(cfg, resolve=True))
    append_summary(Path(cfg.summary_path), row)
    if sweep_dir is not None:
        upsert_summary(sweep_dir / SWEEP_SUMMARY, row)
    _last_job_end = time.perf_counter()
    return row


def _run_checked(cfg: DictConfig, run_dir: Path, target: accelerators.Target, identity: dict[str, Any], sweep_dir: Optional[Path], gpus_asked: int) -> ResultRow:
    prepared = prepare_pipeline(cfg, gpus_asked)
    loaded, device, dtype, resolution = prepared.loaded, prepared.device, prepared.dtype, prepared.resolution
    pipe = loaded.pipe
    prompts = load_prompts(cfg.prompts)[: cfg.num_prompts]
    methods = accelerators.build(cfg.accel, target)
    base_methods = accelerators.baseline_methods(cfg.baseline, target)
    clip = choose_clip(cfg.clip.model, cfg.clip.pretrained, cfg.pipeline.weights)
    scorer = clip_scorer(clip, device, cfg.clip.batch_size)
    log.info("%s (%s weights, from %s) | %s %d steps | %d prompts, batch %d | %s on %s %s, against the %s baseline",
             cfg.pipeline.label, cfg.pipeline.weights, loaded.source, cfg.scheduler.label, cfg.steps,
             len(prompts), cfg.batch_size, cfg.accel.name, device, _DTYPE_NAMES[dtype], identity["baseline"])

    def measure_baseline() -> Baseline:
        (measured,) = _measure([("baseline", base_methods)], pipe, prompts, cfg, device, resolution, interleave=False)
        return Baseline(measured, scorer.scores(measured.images, prompts))

    if cfg.interleave:  # the baseline is re-measured, its passes alternating with the accelerated ones
        base_side, accel_side = _measure([("baseline", base_methods), (cfg.accel.name, methods)], pipe, prompts, cfg, device, resolution, interleave=True)
        baseline, baseline_cached = Baseline(base_side, scorer.scores(base_side.images, prompts)), False
    else:
        key = baseline_key(
            pipeline={k: cfg.pipeline[k] for k in ("family", "weights", "architecture", "model_id")},
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            prompts=prompts,
            clip=clip.label,
            device=physical_device(device),
            dtype=_DTYPE_NAMES[dtype],
            resolution=resolution,
            baseline=identity["baseline"],
            **{k: cfg[k] for k in ("steps", "batch_size", "seed", "warmup_batches", "warmup_tolerance", "warmup_max_batches",
                                   "repeats", "guidance_scale", "count_flops")},
        )
        # once per process, and once per sweep across its processes
        baseline, baseline_cached = get_or_measure(key, measure_baseline, sweep_dir / "baselines" if sweep_dir else None)
        (accel_side,) = _measure([(cfg.accel.name, methods)], pipe, prompts, cfg, device, resolution, interleave=False)
    base, accel = baseline.measurement, accel_side
    scoring_began = time.perf_counter()
    base_clip = float(baseline.clip_scores.mean())
    accel_clip = float(scorer.scores(accel.images, prompts).mean())
    fidelity_psnr, fidelity_ssim = float(np.mean(psnr_db(base.images, accel.images))), float(np.mean(ssim(base.images, accel.images, device)))
    scoring_s = time.perf_counter() - scoring_began
    if cfg.save_images:
        _save_images(run_dir, {"baseline": base, "accel": accel})

    ratios = speedup_ratios(base, accel)
    return ResultRow(
        status="ok",
        num_images=accel.num_images,
        resolution=resolution,
        accel_params=accelerators.params_record(methods),
        device=physical_device(device),
        device_name=device_name(device),
        host_cpu=device_name(torch.device("cpu")),
        dtype=_DTYPE_NAMES[dtype],
        model_source=loaded.source,
        pipeline_load_s=loaded.load_s,
        baseline_cached=baseline_cached,
        warmup_batches=accel.warmup_batches,
        base_warmup_batches=base.warmup_batches,
        warmup_s=sum(accel.warmup_times_s),
        base_warmup_s=sum(base.warmup_times_s),
        measured_s=accel.measured_s,
        base_measured_s=base.measured_s,
        repeats=accel.repeats,
        interleaved=bool(cfg.interleave),
        latency_s=accel.latency_s,
        base_latency_s=base.latency_s,
        latency_min_s=accel.latency_min_s,
        latency_max_s=accel.latency_max_s,
        latency_spread=accel.latency_spread,
        base_latency_min_s=base.latency_min_s,
        base_latency_max_s=base.latency_max_s,
        base_latency_spread=base.latency_spread,
        speedup=statistics.median(ratios),
        speedup_min=min(ratios),
        speedup_max=max(ratios),
        batch_time_median_s=accel.batch_time_median_s,
        base_batch_time_median_s=base.batch_time_median_s,
        batch_time_min_s=accel.batch_time_min_s,
        batch_time_max_s=accel.batch_time_max_s,
        base_batch_time_min_s=base.batch_time_min_s,
        base_batch_time_max_s=base.batch_time_max_s,
        images_per_s=accel.images_per_s,
        base_images_per_s=base.images_per_s,
        flops_per_image=accel.flops_per_image,
        base_flops_per_image=base.flops_per_image,
        flops_ratio=_ratio(base.flops_per_image, accel.flops_per_image),
        peak_mem_gb=accel.peak_mem_gb,
        base_peak_mem_gb=base.peak_mem_gb,
        clip_score=accel_clip,
        base_clip_score=base_clip,
        clip_loss=_ratio(base_clip - accel_clip, base_clip),
        clip_model=clip.label,
        clip_weights=clip.weights,
        psnr_db=fidelity_psnr,
        ssim=fidelity_ssim,
        flops_s=accel.flops_s,
        base_flops_s=base.flops_s,
        scoring_s=scoring_s,
        compile_s=_compile_s(accel) if "compile" in cfg.accel.methods else None,
        base_compile_s=_compile_s(base) if base_methods else None,
        **identity,
    )


def format_summary(row: ResultRow, summary_path: str) -> str:
    """The short table a run ends with."""
    if row.status != "ok":
        return f"{row.status}: {row.error}\nrow appended to {summary_path}"
    fidelity = f"PSNR {fmt(row.psnr_db, '.1f')} dB, SSIM {fmt(row.ssim, '.3f')}"
    random_note = "  (random weights: not a quality measure)" if row.clip_weights == "random" or row.weights == "random" else ""
    lines = [
        f"{row.pipeline_label} [{row.weights} weights] | {row.scheduler_class} {row.steps} steps | "
        f"{row.num_images} images, batch {row.batch_size}, {row.resolution}px | {row.device} ({row.device_name}) {row.dtype}",
        f"{'':24}{'baseline':>12}{row.accel:>22}",
        f"{'latency (s / image)':24}{fmt(row.base_latency_s, '.4f'):>12}{fmt(row.latency_s, '.4f'):>22}   speedup {row.speedup:.2f}x"
        f" [{row.speedup_min:.2f}-{row.speedup_max:.2f}]",
        f"{'spread over repeats':24}{fmt(row.base_latency_spread, '.1%'):>12}{fmt(row.latency_spread, '.1%'):>22}"
        f"   {row.repeats} repeat(s){', interleaved (baseline re-measured)' if row.interleaved else ''}"
        f"{', baseline reused' if row.baseline_cached else ''}; warm-up {row.base_warmup_batches}/{row.warmup_batches} batches",
        f"{'batch median (s)':24}{fmt(row.base_batch_time_median_s, '.4f'):>12}{fmt(row.batch_time_median_s, '.4f'):>22}",
        f"{'GFLOP / image':24}{fmt(row.base_flops_per_image, '.2f'):>12}{fmt(row.flops_per_image, '.2f'):>22}   FLOPs ratio {fmt(row.flops_ratio, '.2f')}x",
        f"{'peak memory (GB)':24}{fmt(row.base_peak_mem_gb, '.2f'):>12}{fmt(row.peak_mem_gb, '.2f'):>22}",
        *([f"{'compile (s)':24}{fmt(row.base_compile_s, '.1f'):>12}{fmt(row.compile_s, '.1f'):>22}   in the warm-up, outside the latency"]
          if row.compile_s is not None or row.base_compile_s is not None else []),
        f"{'CLIP score':24}{fmt(row.base_clip_score, '.2f'):>12}{fmt(row.clip_score, '.2f'):>22}   loss {fmt(row.clip_loss, '+.2%')}{random_note}",
        f"{'fidelity to baseline':24}{'':>12}{fidelity:>22}",
        f"params {json.dumps(row.accel_params, sort_keys=True)} | baseline {row.baseline} | CLIP {row.clip_model} ({row.clip_weights})",
        f"row appended to {summary_path}; details in {row.run_dir}/result.json",
    ]
    return "\n".join(lines)


def main(cfg: DictConfig) -> str:
    """Hydra task: one job of a run or a sweep; returns the job's status for the sweep's tally."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        row = run(cfg, run_dir)
        print(format_summary(row, cfg.summary_path), flush=True)
        if row.status != "ok":
            sys.exit(2 if row.status == "invalid" else 1)
        return row.status

    sweep_dir, job_num = Path(hydra_cfg.sweep.dir), hydra_cfg.job.num
    previous = sweeps.previous_ok(run_dir, run_id(cfg))
    if previous:
        status, ran_on = "skipped", sweeps.where(previous.get("host"), previous["device"], previous["device_name"])
    else:
        row = run(cfg, run_dir, sweep_dir, sweeps.gpus_asked(hydra_cfg.launcher))
        print(format_summary(row, cfg.summary_path), flush=True)
        status, ran_on = row.status, sweeps.where(row.host, row.device, row.device_name)
    print(sweeps.progress_line(sweep_dir, SWEEP_SUMMARY, job_num, status, ran_on), flush=True)
    return status
