"""One run: the accelerated pipeline measured against its own baseline, fairly, into one result row.

config -> check -> pipeline -> prompts -> baseline measure -> accelerated measure -> metrics -> row
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__, accelerators, config
from .errors import ConfigError
from .measure import Generate, Measurement, measure
from .metrics import ClipScorer, choose_clip, psnr_db, ssim, to_uint8
from .pipelines import load_pipeline, resolve_dtype, set_scheduler
from .prompts import load_prompts
from .results import ResultRow, append_summary, write_result

log = logging.getLogger(__name__)

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@dataclass(frozen=True)
class Sides:
    baseline: Measurement
    accel: Measurement


def _generate(applied: accelerators.AppliedPipeline, cfg: DictConfig, resolution: int) -> Generate:
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


def _measure_both(pipe: Any, methods: list[accelerators.Accelerator], prompts: list[str], cfg: DictConfig, device: torch.device, resolution: int) -> Sides:
    measured = {}
    for side, active in (("baseline", []), ("accel", methods)):
        with accelerators.applied(pipe, active) as applied:
            measured[side] = measure(
                _generate(applied, cfg, resolution),
                prompts,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                warmup_batches=cfg.warmup_batches,
                device=device,
                before_batch=applied.reset,
                count_flops=cfg.count_flops,
                label=side if side == "baseline" else cfg.accel.name,
            )
    return Sides(**measured)


def _save_images(run_dir: Path, sides: Sides) -> None:
    from PIL import Image

    for side in ("baseline", "accel"):
        folder = run_dir / "images" / side
        folder.mkdir(parents=True, exist_ok=True)
        for index, pixels in enumerate(to_uint8(getattr(sides, side).images)):
            Image.fromarray(pixels).save(folder / f"{index:04d}.png")


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    return numerator / denominator if numerator is not None and denominator else None


def run(cfg: DictConfig, run_dir: Path) -> ResultRow:
    """Measure one configuration; always returns a row (ok, failed or invalid), written to disk."""
    identity = dict(
        run_id=run_id(cfg),
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        pipeline=cfg.pipeline.name,
        pipeline_label=cfg.pipeline.label,
        weights=cfg.pipeline.weights,
        scheduler=cfg.scheduler.name,
        scheduler_class=cfg.scheduler.class_name,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        accel=cfg.accel.name,
        seed=cfg.seed,
        guidance_scale=cfg.guidance_scale,
        versions=versions(),
        run_dir=str(run_dir),
    )
    try:
        target = config.check(cfg)
    except ConfigError as error:
        row = ResultRow(status="invalid", error=str(error), **identity)
    else:
        try:
            row = _run_checked(cfg, run_dir, target, identity)
        except Exception as error:  # one failed job must not end a sweep: it becomes a row
            log.exception("run failed")
            message = " ".join(f"{type(error).__name__}: {error}".split())
            row = ResultRow(status="failed", error=message, **identity)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    write_result(run_dir, row, OmegaConf.to_container(cfg, resolve=True))
    append_summary(Path(cfg.summary_path), row)
    return row


def _run_checked(cfg: DictConfig, run_dir: Path, target: accelerators.Target, identity: dict[str, Any]) -> ResultRow:
    device = torch.device(config.resolve_device(cfg.device))
    dtype = resolve_dtype(cfg.dtype, device.type)
    resolution = cfg.resolution or cfg.pipeline.resolution
    seed_everything(cfg.seed)

    pipe, source, load_s = load_pipeline(cfg.pipeline, str(device), dtype, cfg.cache_dir)
    set_scheduler(pipe, cfg.scheduler)
    prompts = load_prompts(cfg.prompts)[: cfg.num_prompts]
    methods = accelerators.build(cfg.accel, target)
    log.info("%s (%s weights, from %s) | %s %d steps | %d prompts, batch %d | %s on %s %s",
             cfg.pipeline.label, cfg.pipeline.weights, source, cfg.scheduler.label, cfg.steps,
             len(prompts), cfg.batch_size, cfg.accel.name, device, _DTYPE_NAMES[dtype])

    sides = _measure_both(pipe, methods, prompts, cfg, device, resolution)

    clip = choose_clip(cfg.clip.model, cfg.clip.pretrained, cfg.pipeline.weights)
    scorer = ClipScorer(clip, device, cfg.clip.batch_size)
    base_clip = float(scorer.scores(sides.baseline.images, prompts).mean())
    accel_clip = float(scorer.scores(sides.accel.images, prompts).mean())
    if cfg.save_images:
        _save_images(run_dir, sides)

    base, accel = sides.baseline, sides.accel
    return ResultRow(
        status="ok",
        num_images=accel.num_images,
        resolution=resolution,
        accel_params=accelerators.params_record(methods),
        device=str(device),
        device_name=device_name(device),
        dtype=_DTYPE_NAMES[dtype],
        model_source=source,
        pipeline_load_s=load_s,
        warmup_batches=accel.warmup_batches,
        latency_s=accel.latency_s,
        base_latency_s=base.latency_s,
        speedup=base.latency_s / accel.latency_s,
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
        psnr_db=float(np.mean(psnr_db(base.images, accel.images))),
        ssim=float(np.mean(ssim(base.images, accel.images))),
        **identity,
    )


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_summary(row: ResultRow, summary_path: str) -> str:
    """The short table a run ends with."""
    if row.status != "ok":
        return f"{row.status}: {row.error}\nrow appended to {summary_path}"
    fidelity = f"PSNR {_fmt(row.psnr_db, '.1f')} dB, SSIM {_fmt(row.ssim, '.3f')}"
    random_note = "  (random weights: not a quality measure)" if row.clip_weights == "random" or row.weights == "random" else ""
    lines = [
        f"{row.pipeline_label} [{row.weights} weights] | {row.scheduler_class} {row.steps} steps | "
        f"{row.num_images} images, batch {row.batch_size}, {row.resolution}px | {row.device} ({row.device_name}) {row.dtype}",
        f"{'':24}{'baseline':>12}{row.accel:>22}",
        f"{'latency (s / image)':24}{_fmt(row.base_latency_s, '.4f'):>12}{_fmt(row.latency_s, '.4f'):>22}   speedup {row.speedup:.2f}x",
        f"{'batch median (s)':24}{_fmt(row.base_batch_time_median_s, '.4f'):>12}{_fmt(row.batch_time_median_s, '.4f'):>22}",
        f"{'GFLOP / image':24}{_fmt(row.base_flops_per_image, '.2f'):>12}{_fmt(row.flops_per_image, '.2f'):>22}   FLOPs ratio {_fmt(row.flops_ratio, '.2f')}x",
        f"{'peak memory (GB)':24}{_fmt(row.base_peak_mem_gb, '.2f'):>12}{_fmt(row.peak_mem_gb, '.2f'):>22}",
        f"{'CLIP score':24}{_fmt(row.base_clip_score, '.2f'):>12}{_fmt(row.clip_score, '.2f'):>22}   loss {_fmt(row.clip_loss, '+.2%')}{random_note}",
        f"{'fidelity to baseline':24}{'':>12}{fidelity:>22}",
        f"params {json.dumps(row.accel_params, sort_keys=True)} | CLIP {row.clip_model} ({row.clip_weights})",
        f"row appended to {summary_path}; details in {row.run_dir}/result.json",
    ]
    return "\n".join(lines)


def main(cfg: DictConfig) -> ResultRow:
    """Hydra task: one job of a run or a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    row = run(cfg, Path(hydra_cfg.runtime.output_dir))
    print(format_summary(row, cfg.summary_path), flush=True)
    if row.status != "ok" and hydra_cfg.mode == RunMode.RUN:
        sys.exit(2 if row.status == "invalid" else 1)
    return row
