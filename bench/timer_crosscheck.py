"""Independent timing cross-check: the same pipeline call timed by accel_bench's ``measure`` and by
``torch.utils.benchmark.Timer(...).blocked_autorange()``, in alternating rounds so that clock or
load drift on the GPU hits both timers alike. The medians of the two per-image latencies must
agree within 3%.

    python bench/timer_crosscheck.py pipeline=sd15 pipeline.weights=random accel=deepcache steps=50 batch_size=4 \\
        dtype=fp16 --out $OUT/timer_crosscheck_sd15.json      # on a GPU
    python bench/timer_crosscheck.py steps=4 batch_size=2 --out /tmp/x.json  # the tiny pipeline on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch.utils import benchmark

from accel_bench import accelerators, config
from accel_bench.environment import device_name
from accel_bench.errors import exit_2_on_config_error
from accel_bench.experiment import pipeline_call, prepare_pipeline
from accel_bench.measure import measure, prompt_generators, prompt_seed
from accel_bench.prompts import load_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="run.py overrides")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds of the two timers")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds blocked_autorange spends per round")
    options = parser.parse_args()
    cfg = config.compose_run_config(options.overrides)
    methods = config.check(cfg).methods
    prepared = prepare_pipeline(cfg)
    loaded, device, resolution = prepared.loaded, prepared.device, prepared.resolution
    prompts = load_prompts(cfg.prompts)[: cfg.batch_size]  # one batch: the unit both timers see

    with accelerators.applied(loaded.pipe, methods) as applied:
        generate = pipeline_call(applied, cfg, resolution)

        def ours(warmup_batches, repeats=config.resolve_repeats(cfg.repeats, str(device))) -> float:
            return measure(
                generate,
                prompts,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                warmup_batches=warmup_batches,
                device=device,
                before_batch=applied.reset,
                repeats=repeats,
                count_flops=False,
                label="measure",
            ).latency_s

        def call() -> None:
            # measure() resets and makes generators outside its timed region; a Timer statement
            # cannot, so they are inside here: microseconds to a millisecond against a whole batch
            applied.reset(prompt_seed(cfg.seed, 0))
            generate(prompts, prompt_generators(cfg.seed, 0, len(prompts)))
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        timer = benchmark.Timer(
            stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads()
        )  # its default is 1
        ours(
            config.warmup_policy(cfg, str(device)).batches, repeats=1
        )  # warm up (until stable on a GPU), then alternate
        ours_s, theirs_s, timer_runs = [], [], 0
        for _ in range(options.rounds):
            ours_s.append(ours(0))
            independent = timer.blocked_autorange(min_run_time=options.min_run_time)
            theirs_s.append(independent.median / len(prompts))
            timer_runs += len(independent.times)

    ours_median, theirs_median = statistics.median(ours_s), statistics.median(theirs_s)
    report = {
        "overrides": options.overrides,
        "device": device_name(device),
        "rounds": options.rounds,
        "measure_latency_s": ours_median,
        "measure_round_latencies_s": ours_s,
        "timer_latency_s": theirs_median,
        "timer_round_latencies_s": theirs_s,
        "timer_runs": timer_runs,
        "relative_difference": abs(ours_median - theirs_median) / theirs_median,
    }
    report["within_3pct"] = report["relative_difference"] <= 0.03
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    with exit_2_on_config_error():
        main()
