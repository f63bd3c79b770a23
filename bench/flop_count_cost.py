"""What counting a side's FLOPs costs: one batch plain, under a bare dispatch mode (the price of
seeing every operation), under ``measure.FlopCount`` evaluating every formula, and under
``FlopCount`` as measure runs it (a shape formula's result kept per operation, shapes and
arguments), timed by ``measure`` with passes interleaved (a pass is one batch; a disturbed pass is
named). A job whose warm-up is inherited pays the
counted batch's excess over a plain one (bench/README.md, "Packed sweeps on the GPU").
The two counts must agree to the FLOP. The formulas' own cost is also timed apart, without the
pipeline's arithmetic and its noise: every formula call of one counted batch recorded, then
replayed through each way of counting.

    python bench/flop_count_cost.py accel=deepcache --out bench/results/flop_count_cost/tiny_deepcache.json
    python bench/flop_count_cost.py pipeline=tiny_xl accel=deepcache --out .../tiny_xl_deepcache.json
    python bench/flop_count_cost.py accel=none --out .../tiny_none.json
    python bench/flop_count_cost.py pipeline=sd15 pipeline.weights=random batch_size=4 dtype=fp16 \\
        accel=deepcache --out $OUT/sd15_deepcache.json                # a GPU: where the count is host-bound

On a CPU only the tiny pipelines are host-bound enough to show it (SD1.5's arithmetic there is seconds
a batch, its noise larger than the count's cost).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from accel_bench import accelerators, config
from accel_bench.environment import device_name, versions
from accel_bench.errors import exit_2_on_config_error
from accel_bench.experiment import pipeline_call, prepare_pipeline
from accel_bench.measure import (
    FlopCount,
    WarmupPolicy,
    measure_sides,
    prompt_generators,
    prompt_seed,
    reads_shapes_only,
)


class Bare(TorchDispatchMode):
    """Sees every operation, counts nothing."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return func(*args, **(kwargs or {}))


class EveryFormula(FlopCount):
    """FlopCount with no result kept: each formula evaluated at each operation."""

    def _flops(self, func, formula, args, kwargs, out) -> int:  # type: ignore[no-untyped-def]
        return formula(*args, **kwargs, out_val=out)


SIDES: dict[str, Any] = {"plain": None, "bare mode": Bare, "every formula": EveryFormula, "kept results": FlopCount}
COUNTERS: dict[str, Any] = {"every formula": EveryFormula, "kept results": FlopCount}


class Recorded(FlopCount):
    """FlopCount that keeps every formula call's operation and arguments, to replay them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []

    def _flops(self, func, formula, args, kwargs, out) -> int:  # type: ignore[no-untyped-def]
        if reads_shapes_only(formula):
            self.calls.append((func, formula, *(tree_map_only(torch.Tensor, _meta, v) for v in (args, kwargs, out))))
        else:  # a formula that reads values keeps its tensors (nested attention's offsets: small)
            self.calls.append((func, formula, args, kwargs, out))
        return super()._flops(func, formula, args, kwargs, out)


def _meta(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's shape, strides and dtype without its memory: all a shape formula reads. Keeping a
    batch's every activation to replay its formulas filled an H200 on SD1.5 at batch 4."""
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")


def formula_seconds(calls: list[tuple[Any, ...]], rounds: int, total: int) -> dict[str, float]:
    """Median seconds, per way of counting, to evaluate one batch's formula calls; each replay must
    count the recorded batch's ``total`` (the shape formulas replay on meta tensors)."""
    seconds: dict[str, list[float]] = {name: [] for name in COUNTERS}
    for _ in range(rounds):
        for name, counter in COUNTERS.items():
            count, began, flops = counter(), time.perf_counter(), 0
            for call in calls:
                flops += count._flops(*call)
            seconds[name].append(time.perf_counter() - began)
            if flops != total:
                raise SystemExit(f"the replay through {name} counted {flops} FLOPs, the batch {total}")
    return {name: statistics.median(values) for name, values in seconds.items()}


def kept_bytes(calls: list[tuple[Any, ...]]) -> int:
    """The memory of the tensors the recording holds (meta tensors hold none)."""
    held: dict[int, int] = {}
    for call in calls:
        for value in call[2:]:
            tree_map_only(torch.Tensor, lambda t: held.setdefault(id(t), 0 if t.is_meta else t.nbytes), value)
    return sum(held.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="run.py overrides (pipeline, accel, resolution, steps, ...)")
    parser.add_argument("--rounds", type=int, default=7, help="passes of each side (one batch each)")
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    cfg = config.compose_run_config(options.overrides)
    checked = config.check(cfg)
    prepared = prepare_pipeline(cfg, device=checked.device)
    device = prepared.device
    prompts = checked.prompts[: cfg.batch_size]
    totals: dict[str, set[int]] = {"every formula": set(), "kept results": set()}
    with accelerators.applied(prepared.loaded.pipe, checked.methods) as applied:
        generate = pipeline_call(applied, cfg, prepared.resolution)

        def opener(name: str):  # type: ignore[no-untyped-def]
            @contextmanager
            def opened():  # type: ignore[no-untyped-def]
                def call(batch, generators):  # type: ignore[no-untyped-def]
                    mode = SIDES[name]() if SIDES[name] else None
                    with mode if mode is not None else nullcontext():
                        images = generate(batch, generators)
                    if name in totals:
                        totals[name].add(mode.total)
                    return images

                yield call, applied.reset

            return opened

        sides = measure_sides(
            [opener(name) for name in SIDES],
            prompts,
            batch_size=len(prompts),
            seed=cfg.seed,
            warmup=WarmupPolicy(batches=1),
            device=device,
            repeats=options.rounds,
            interleave=True,
            count_flops=False,
            labels=list(SIDES),
        )
        recorder = Recorded()  # one more batch, its formula calls kept to replay
        applied.reset(prompt_seed(cfg.seed, 0))
        with recorder:
            generate(prompts, prompt_generators(cfg.seed, 0, len(prompts)))
        formulas_s = formula_seconds(recorder.calls, options.rounds, recorder.total)
    times = {name: side.batch_times_s for name, side in zip(SIDES, sides)}
    disturbed = {
        name: {str(i): check.causes() for i, check in enumerate(side.checks) if not check.clean}
        for name, side in zip(SIDES, sides)
    }
    if len(totals["every formula"] | totals["kept results"] | {recorder.total}) != 1:
        raise SystemExit(f"the counts disagree: {totals}")
    median = {name: statistics.median(values) for name, values in times.items()}
    excess = {name: median[name] - median["plain"] for name in SIDES if name != "plain"}
    report = {
        "command": "python bench/flop_count_cost.py " + " ".join(options.overrides),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": device_name(device),
        "threads": torch.get_num_threads(),
        "pipeline": cfg.pipeline.name,
        "accel": cfg.accel.name,
        "resolution": prepared.resolution,
        "steps": cfg.steps,
        "batch_size": len(prompts),
        "dtype": cfg.dtype,
        "versions": versions(),
        "rounds": options.rounds,
        "gflop_per_image": totals["kept results"].pop() / 1e9 / len(prompts),
        "seconds": {name: {"median": median[name], "all": times[name]} for name in SIDES},
        "disturbed_passes": disturbed,
        "excess_over_plain_s": excess,
        "counting_excess_cut": 1 - excess["kept results"] / excess["every formula"],
        "formula_calls_per_batch": len(recorder.calls),
        "recorded_tensor_bytes": kept_bytes(recorder.calls),
        "formulas_s_per_batch": formulas_s,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    for name in SIDES:
        extra = f"  (+{excess[name]:.3f} s over plain)" if name in excess else ""
        print(f"{name:>14}: {median[name]:.3f} s median of {options.rounds}{extra}")
    print(f"kept results cut the counting's excess by {report['counting_excess_cut']:.0%}")
    for name, passes in disturbed.items():
        for index, causes in passes.items():
            print(f"disturbed: {name} pass {index}: {', '.join(causes)}")
    print(
        f"the formulas alone, {len(recorder.calls)} calls per batch: every formula {formulas_s['every formula']:.3f} s, "
        f"kept results {formulas_s['kept results']:.3f} s"
    )


if __name__ == "__main__":
    with exit_2_on_config_error():
        main()
