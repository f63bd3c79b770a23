"""Share of a sweep's job time inside measured pipeline calls, for any ``jobs_per_task``, from the
rows of one packed sweep (all jobs of one pipeline and baseline).

From the rows' fields: each job's own cost is ``warmup_s + measured_s + flops_s + scoring_s`` plus
a small rest (files, config); a task's first job also pays the process's start and the pipeline's
load (its ``job_s`` runs from the process's start); the job that measured the baseline pays
``base_warmup_s + base_measured_s + base_flops_s``. Tasks run one after another on one GPU (or on a
cluster whose baseline is already on disk): later tasks read the baseline, they do not re-measure it.

    share(K) = (base_measured + sum measured) / (tasks(K) x task_start + baseline + sum(own + rest))

It also gives the share with ``count_flops=false`` (no FLOPs-counting call on either side).

    python bench/packing_estimate.py bench/results/packed_sweep_gpu/lean_flops/sd15_k4_summary.csv --k 1 2 4 6 12
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from accel_bench.record import read_frame


def parts(rows: pd.DataFrame) -> dict[str, float]:
    rows = rows[rows.status == "ok"]
    own = rows.warmup_s + rows.measured_s + rows.flops_s.fillna(0) + rows.scoring_s.fillna(0)
    measured_base = ~rows.baseline_cached.astype(bool)
    baseline = float((rows.base_warmup_s + rows.base_measured_s + rows.base_flops_s.fillna(0))[measured_base].sum())
    first = rows.pipeline_load_s > 0  # a task's first job (loads are per process)
    extra = rows.job_s - own - measured_base * (rows.base_warmup_s + rows.base_measured_s + rows.base_flops_s.fillna(0))
    rest = float(extra[~first].mean())
    return {
        "jobs": len(rows),
        "tasks_in_rows": int(first.sum()),
        "task_start_s": float((extra[first] - rest).mean()),  # process start + imports + load, per task
        "rest_per_job_s": rest,
        "baseline_s": baseline,
        "base_measured_s": float(rows.base_measured_s[measured_base].sum()),
        "own_s": float(own.sum()),
        "measured_s": float(rows.measured_s.sum()),
        "flops_s": float(rows.flops_s.fillna(0).sum() + rows.base_flops_s.fillna(0)[measured_base].sum()),
        "warmup_s": float(rows.warmup_s.sum()),
        "job_s": float(rows.job_s.sum()),
        "measured_share_of_rows": float(
            (rows.measured_s.sum() + rows.base_measured_s[measured_base].sum()) / rows.job_s.sum()
        ),
    }


def share(p: dict[str, float], k: int, count_flops: bool = True) -> float:
    tasks = math.ceil(p["jobs"] / k)
    total = tasks * p["task_start_s"] + p["baseline_s"] + p["own_s"] + p["jobs"] * p["rest_per_job_s"]
    if not count_flops:
        total -= p["flops_s"]
    return (p["base_measured_s"] + p["measured_s"]) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path, help="a packed sweep's summary.csv")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 6, 12])
    parser.add_argument("--json", type=Path, help="write the estimate here")
    args = parser.parse_args()
    p = parts(read_frame(args.summary))
    estimate = {
        "from": str(args.summary),
        "parts": p,
        "share": {k: share(p, k) for k in args.k},
        "share_without_flops": {k: share(p, k, False) for k in args.k},
    }
    print(
        f"{p['jobs']} jobs in {p['tasks_in_rows']} tasks: measured share of their job time {p['measured_share_of_rows']:.1%}"
    )
    print(
        f"per task start {p['task_start_s']:.1f} s; baseline {p['baseline_s']:.1f} s once; per job: warm-up "
        f"{p['warmup_s'] / p['jobs']:.1f} s, measured {p['measured_s'] / p['jobs']:.1f} s, FLOPs counting "
        f"{(p['flops_s']) / p['jobs']:.1f} s (both sides, per job), rest {p['rest_per_job_s']:.1f} s"
    )
    print(f"{'K':>3} {'share':>7} {'without FLOPs':>14}")
    for k in args.k:
        print(f"{k:>3} {estimate['share'][k]:>7.1%} {estimate['share_without_flops'][k]:>14.1%}")
    if args.json:
        args.json.write_text(json.dumps(estimate, indent=1) + "\n")


if __name__ == "__main__":
    main()
