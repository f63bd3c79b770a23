"""Host work left between graphs per denoising step, with the UNet captured and with the whole step
captured (``accel.compile_targets=[step]``), for each scheduler: the aten operations the host still
issues one at a time, and the Python time outside them.

Under CUDA graphs a captured region costs the host one replay, whatever it holds. What the host still
issues operation by operation is the rest of the step: with the UNet alone captured, the loop's batch
concatenation, classifier-free guidance and the scheduler's step; with the whole step captured, the
loop's concatenation and its guidance (computed, then unused). This counts them on the CPU without
compiling anything: the captured region runs eagerly with the counting paused (its operations are the
graph's), so what is counted is what a replay leaves outside. A step is measured from the start of one
UNet (or whole-step) call to the start of the next, so the text encoding and the VAE decode are out.
The Python time is the wall time outside the region, less the time inside counted operations (on a
CPU, their arithmetic) and the counting's own cost per operation: host-speed noise of a few percent.
Both sides' images are compared (PSNR): the whole step computes what the scheduler computes.

    python bench/step_host_ops.py pipeline=sd15 pipeline.weights=random resolution=64 steps=20 \\
        --out bench/results/step_host_ops/sd15.json                        # CPU, a few minutes
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from pipeline_op_count import OperationCount, counting_cost_s, cpu_context

from accel_bench import accelerators, config
from accel_bench.accelerators.snapshot import PipelineSnapshot
from accel_bench.accelerators.whole_step import WholeStep, denoise_step
from accel_bench.errors import exit_2_on_config_error
from accel_bench.experiment import pipeline_call, prepare_pipeline
from accel_bench.measure import prompt_generators
from accel_bench.metrics.fidelity import psnr_db
from accel_bench.prompts import load_prompts

SCHEDULERS = ("ddim", "dpmsolver", "unipc")
REGIONS = ("unet", "step")


class Outside(OperationCount):
    """Counts operations outside the captured region; ``marks`` one entry per region entered."""

    def __init__(self) -> None:
        super().__init__()
        self.region_s, self.paused = 0.0, False
        self.marks: list[tuple[int, float, float, float]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.paused:
            return func(*args, **(kwargs or {}))
        return super().__torch_dispatch__(func, types, args, kwargs)

    def region(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            self.marks.append((self.count, time.perf_counter(), self.inside_s, self.region_s))
            self.paused, started = True, time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.paused = False
                self.region_s += time.perf_counter() - started

        return call

    def steps(self, cost_s: float) -> list[tuple[int, float]]:
        """(operations, Python seconds) between consecutive region starts."""
        found = []
        for (count, at, inside, region), (count2, at2, inside2, region2) in zip(self.marks, self.marks[1:]):
            operations = count2 - count
            found.append((operations, (at2 - at) - (region2 - region) - (inside2 - inside) - operations * cost_s))
        return found


@contextmanager
def captured(pipe: Any, region: str, counter: Outside) -> Iterator[None]:
    """The pipeline with ``region`` (the UNet, or the whole step) run as one uncounted call."""
    snapshot = PipelineSnapshot(pipe)
    whole = None
    try:
        if region == "unet":
            pipe.unet._compiled_call_impl = counter.region(pipe.unet._call_impl)
        else:
            whole = WholeStep(pipe)
            step, forward = counter.region(denoise_step), pipe.unet._call_impl
            pipe.unet._compiled_call_impl = lambda *args, **kwargs: whole(step, forward, args, kwargs)
        yield
    finally:
        if whole is not None:
            whole.remove()
        snapshot.restore()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="run.py overrides (pipeline, resolution, steps, ...)")
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    shared = ["device=cpu", "dtype=fp32", "batch_size=1", *options.overrides]
    cost_s = counting_cost_s()
    records = []
    for scheduler in SCHEDULERS:
        cfg = config.compose_run_config([*shared, f"scheduler={scheduler}"])
        config.check(cfg)
        prepared = prepare_pipeline(cfg)
        pipe, resolution = prepared.loaded.pipe, prepared.resolution
        prompts = load_prompts(cfg.prompts)[: cfg.batch_size]
        images = {}
        for region in REGIONS:
            for counted in (False, True):  # the first call pays one-time costs (the schedule's probe)
                counter = Outside()
                with accelerators.applied(pipe, []) as plain, captured(pipe, region, counter), torch.no_grad():
                    with counter if counted else nullcontext():
                        generate = pipeline_call(plain, cfg, resolution)
                        images[region] = generate(prompts, prompt_generators(cfg.seed, 0, len(prompts)))
            steps = counter.steps(cost_s)
            operations = [ops for ops, _ in steps]
            records.append(
                {
                    "scheduler": cfg.scheduler.label,
                    "captured": "the UNet" if region == "unet" else "the whole step",
                    "steps_measured": len(steps),
                    "operations_per_step": {
                        "median": statistics.median(operations),
                        "min": min(operations),
                        "max": max(operations),
                    },
                    "python_us_per_step_median": statistics.median(s for _, s in steps) * 1e6,
                }
            )
        records[-1]["psnr_db_whole_step_vs_unet"] = float(np.min(psnr_db(images["unet"], images["step"])))
    report = {
        "command": "python bench/step_host_ops.py " + " ".join(options.overrides),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **cpu_context(cfg, resolution, cost_s),
        "steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
        "rows": records,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    for record in records:
        ops = record["operations_per_step"]
        print(
            f"{record['scheduler']:>13}, {record['captured']:<14} captured: {ops['median']:>5} operations per step "
            f"[{ops['min']}-{ops['max']}], Python {record['python_us_per_step_median']:.0f} us"
            + (
                f"; PSNR {record['psnr_db_whole_step_vs_unet']:.1f} dB"
                if "psnr_db_whole_step_vs_unet" in record
                else ""
            )
        )


if __name__ == "__main__":
    with exit_2_on_config_error():
        main()
