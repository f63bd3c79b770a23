"""Where a method's time goes: for one batch, the pipeline's wall time (unprofiled, median of
--calls, timed by ``measure``) and the GPU's busy time (the summed durations of its kernels and
copies in one torch.profiler trace), for the baseline and each method. Busy time falls with the work the GPU
is given; wall time falls with it only where the GPU sets the pace. A busy fraction well under 1
means the GPU waits on the host.

    python bench/gpu_busy_profile.py pipeline=sdxl pipeline.weights=random steps=25 batch_size=4 dtype=fp16 \\
        --method "accel=tgate accel.gate_step=null accel.gate_fraction=0.4" \\
        --method "accel=deepcache accel.cache_interval=3 accel.cache_branch_id=0" --out $OUT/gpu_busy_sdxl.json
    python bench/gpu_busy_profile.py steps=4 batch_size=2 --method accel=deepcache --out /tmp/x.json  # CPU: no busy time
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from accel_bench import accelerators, config
from accel_bench.environment import device_name
from accel_bench.errors import exit_2_on_config_error
from accel_bench.experiment import pipeline_call, prepare_pipeline
from accel_bench.measure import Measurement, measure
from accel_bench.prompts import load_prompts


def profile_side(
    applied: accelerators.AppliedPipeline, cfg, resolution: int, device: torch.device, calls: int, label: str
) -> dict:
    """Wall time of ``calls`` unprofiled batches (median) after the configured warm-up (by default until
    two batches agree within 2%; a fixed count is capped at the one batch there is), then one profiled
    batch; both through ``measure``, the project's one timing path."""
    generate = pipeline_call(applied, cfg, resolution)
    prompts = load_prompts(cfg.prompts)[: cfg.batch_size]  # one batch

    def timed(warmup_batches: int | str, repeats: int) -> Measurement:
        return measure(
            generate,
            prompts,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            warmup_batches=warmup_batches,
            warmup_tolerance=cfg.warmup_tolerance,
            warmup_max_batches=cfg.warmup_max_batches,
            device=device,
            before_batch=applied.reset,
            repeats=repeats,
            count_flops=False,
            label=label,
        )

    unprofiled = timed(warmup_batches=cfg.warmup_batches, repeats=calls)
    walls = unprofiled.batch_times_s
    wall_s = statistics.median(walls)
    side = {
        "wall_s": wall_s,
        "wall_calls_s": walls,
        "warmup_calls_s": unprofiled.warmup_times_s,
        "busy_s": None,
        "busy_fraction": None,
        "device_events": None,
    }
    if device.type == "cuda":
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
            timed(warmup_batches=0, repeats=1)
        device_events = [event for event in trace.events() if event.device_type == DeviceType.CUDA]
        busy_s = sum(event.time_range.elapsed_us() for event in device_events) / 1e6
        side.update(busy_s=busy_s, busy_fraction=busy_s / wall_s, device_events=len(device_events))
    return side


def ratio(baseline: dict, side: dict, key: str) -> float | None:
    return None if side[key] is None else baseline[key] / side[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="run.py overrides shared by every side")
    parser.add_argument(
        "--method",
        action="append",
        required=True,
        help="one method's run.py overrides, space-separated (repeat for more)",
    )
    parser.add_argument("--calls", type=int, default=3, help="unprofiled calls timed per side")
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    configs = {method: config.compose_run_config([*options.overrides, *method.split()]) for method in options.method}
    checked = {method: config.check(cfg) for method, cfg in configs.items()}
    cfg = next(iter(configs.values()))  # the shared settings: pipeline, device, dtype, batch
    device = device_name(torch.device(config.resolve_device(cfg.device)))
    report = {"overrides": options.overrides, "device": device, "calls": options.calls, "sides": {}}

    def run(name: str, side_cfg, methods: list[accelerators.Accelerator]) -> dict:
        prepared = prepare_pipeline(side_cfg)  # loaded once; the side's own scheduler
        with accelerators.applied(prepared.loaded.pipe, methods) as applied:
            side = profile_side(applied, side_cfg, prepared.resolution, prepared.device, options.calls, name)
        report["sides"][name] = side
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(report, indent=2) + "\n")  # after each side: a cut-off run keeps the rest
        print(
            f"{name}: wall {side['wall_s']:.3f} s, busy {side['busy_s']} s, {side['device_events']} device events",
            flush=True,
        )
        return side

    baseline = run("baseline", cfg, [])
    for method, method_cfg in configs.items():
        side = run(method, method_cfg, checked[method].methods)
        side.update(wall_ratio=ratio(baseline, side, "wall_s"), busy_ratio=ratio(baseline, side, "busy_s"))
        options.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{method}: wall ratio {side['wall_ratio']:.2f}x, busy ratio {side['busy_ratio']}", flush=True)


if __name__ == "__main__":
    with exit_2_on_config_error():
        main()
