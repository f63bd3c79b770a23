"""Host work for each method of ``+sweep=published``: aten operations per pipeline call, and the
Python time spent outside them.

Each operation costs the host Python, dispatcher and (for most) a kernel launch, whatever the GPU
does; where a run is bound by the host issuing work (bench/README.md: SD1.5 at batch 1 and 4,
SDXL at batch 1 on the lent H100), a method's speedup is capped by how many operations it removes,
not by how many FLOPs. This counts both sides of every job of the published sweep's grids, in the
same pipeline call that ``measure`` times (text encoding, denoising loop, VAE decode). The count
does not depend on the resolution, so a small one keeps the real architectures cheap on a CPU,
where attention is one fused operation as on a GPU (the meta device would split it into 16-21).
It is counted in fp32 (fp16 is GPU-only): on a GPU, SDXL's VAE adds its fp16 up-cast, the same
operations on both sides.

A method can also add host work that is no operation (Python in its wrappers). The Python time is
the call's wall time minus the time inside operations (which on a CPU holds the arithmetic) minus
the counting's own cost per operation (calibrated on a cheap operation): one call per side after
an untimed warm-up call, on this machine's CPU, so a few percent of noise and not the GPU host's
absolute speed; its ratio between the two sides is the figure to read.

    python bench/pipeline_op_count.py pipeline=sd15 pipeline.weights=random resolution=64 \\
        --out bench/results/pipeline_op_count/sd15.json                    # CPU, a few minutes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm import tqdm

from accel_bench import accelerators, config
from accel_bench.environment import device_name
from accel_bench.errors import exit_2_on_config_error
from accel_bench.experiment import pipeline_call, prepare_pipeline
from accel_bench.measure import prompt_generators, prompt_seed
from accel_bench.prompts import load_prompts
from hydra_plugins.accel_bench_sweeper.grid_sweeper import expand_grids


class OperationCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.inside_s = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        started = time.perf_counter()
        result = func(*args, **(kwargs or {}))
        self.inside_s += time.perf_counter() - started
        return result


@dataclass
class HostWork:
    operations: int
    python_s: float  # outside operations, less the counting's own cost


def counting_cost_s(operations: int = 20_000, rounds: int = 5) -> float:
    """Seconds the counting itself adds per operation outside it: a cheap operation timed with and
    without the counting mode (median of rounds, after one round to warm up)."""
    x = torch.zeros(4)
    costs = []
    for _ in range(rounds + 1):
        started = time.perf_counter()
        for _ in range(operations):
            x + 1
        plain_s = time.perf_counter() - started
        with OperationCount() as counter:
            started = time.perf_counter()
            for _ in range(operations):
                x + 1
            counted_s = time.perf_counter() - started
        costs.append((counted_s - counter.inside_s - plain_s) / operations)
    return statistics.median(costs[1:])


def cpu_context(cfg, resolution: int, cost_s: float) -> dict:
    """What a CPU count ran on and with, as the scenario's reports record it."""
    return {
        "pipeline": cfg.pipeline.name,
        "resolution": resolution,
        "device": "cpu",
        "dtype": "fp32",
        "batch_size": cfg.batch_size,
        "cpu": device_name(torch.device("cpu")),
        "threads": torch.get_num_threads(),
        "counting_cost_us_per_operation": cost_s * 1e6,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


def published_jobs() -> list[list[str]]:
    """The accelerator grids of ``+sweep=published``, expanded as its sweeper does: one override list per job."""
    sweep = OmegaConf.load(config.CONF_DIR / "sweep" / "published.yaml")
    return expand_grids([], OmegaConf.to_container(sweep.hydra.sweeper.grids), [])


def host_work(
    applied: accelerators.AppliedPipeline, cfg, resolution: int, prompts: list[str], cost_s: float
) -> HostWork:
    generate = pipeline_call(applied, cfg, resolution)
    applied.reset(prompt_seed(cfg.seed, 0))
    with torch.no_grad(), OperationCount() as counter:
        started = time.perf_counter()
        generate(prompts, prompt_generators(cfg.seed, 0, len(prompts)))
        wall_s = time.perf_counter() - started
    return HostWork(counter.count, wall_s - counter.inside_s - counter.count * cost_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="run.py overrides shared by every job (pipeline, resolution, ...)")
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    shared = ["device=cpu", "dtype=fp32", "batch_size=1", *options.overrides]
    cost_s = counting_cost_s()
    baselines: dict[int, HostWork] = {}
    records = []
    for job in tqdm(published_jobs(), desc="jobs", unit="job"):
        cfg = config.compose_run_config(shared + job)
        methods = config.check(cfg).methods
        prepared = prepare_pipeline(cfg)  # on the CPU: the shared overrides say so
        loaded, resolution = prepared.loaded, prepared.resolution
        prompts = load_prompts(cfg.prompts)[: cfg.batch_size]
        if not baselines:  # the process's first call pays one-time costs
            with accelerators.applied(loaded.pipe, []) as plain:
                host_work(plain, cfg, resolution, prompts, cost_s)
        if cfg.steps not in baselines:
            with accelerators.applied(loaded.pipe, []) as plain:
                baselines[cfg.steps] = host_work(plain, cfg, resolution, prompts, cost_s)
        with accelerators.applied(loaded.pipe, methods) as accelerated:
            work = host_work(accelerated, cfg, resolution, prompts, cost_s)
        baseline = baselines[cfg.steps]
        records.append(
            {
                "overrides": job,
                "accel": cfg.accel.name,
                "steps": cfg.steps,
                "accel_params": accelerators.params_record(methods),
                "operations_per_call": work.operations,
                "baseline_operations_per_call": baseline.operations,
                "operation_ratio": baseline.operations / work.operations,
                "python_s_per_call": work.python_s,
                "baseline_python_s_per_call": baseline.python_s,
                "python_time_ratio": baseline.python_s / work.python_s,
            }
        )
    report = {**cpu_context(cfg, resolution, cost_s), "jobs": records}
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    for record in records:
        print(
            f"{record['accel']:>16} {record['steps']:>3} steps {json.dumps(record['accel_params'])}: "
            f"{record['operations_per_call']} vs {record['baseline_operations_per_call']} operations, "
            f"ratio {record['operation_ratio']:.2f}x; Python {record['python_s_per_call']:.2f} s vs "
            f"{record['baseline_python_s_per_call']:.2f} s, ratio {record['python_time_ratio']:.2f}x"
        )


if __name__ == "__main__":
    with exit_2_on_config_error():
        main()
