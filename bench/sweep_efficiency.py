"""Sweep efficiency: a 12-job DeepCache grid as one Hydra sweep vs the naive way.

The naive way is what the old scripts did per setting: one process per job, the model loaded
and the baseline re-measured every time. Targets: the sweep at least 3x faster, and at least
70% of its wall time inside measured and warm-up pipeline calls.

    python bench/sweep_efficiency.py --out bench/results/sweep_efficiency   # on a GPU
    python bench/sweep_efficiency.py --out /tmp/eff --tiny                    # the same on the tiny pipeline
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
INTERVALS, BRANCHES = (2, 3, 4, 5), (0, 1, 2)


def timed(args: list[str]) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"run.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - began


def pipeline_seconds(rows: pd.DataFrame) -> float:
    """Seconds inside measured and warm-up pipeline calls, each baseline counted where it was measured."""
    accel = (rows.latency_s * rows.num_images + rows.warmup_s).sum()
    measured_here = rows[~rows.baseline_cached.astype(bool)]
    base = (measured_here.base_latency_s * measured_here.num_images + measured_here.base_warmup_s).sum()
    return float(accel + base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny pipeline on the CPU (checks the script, not the targets)")
    options = parser.parse_args()
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if options.tiny:
        common = ["pipeline=tiny", "accel=deepcache", "steps=10", "batch_size=2", "num_prompts=4"]
    else:
        common = ["pipeline=sd15", "pipeline.weights=random", "accel=deepcache", "steps=50", "batch_size=4", "num_prompts=16"]

    # the sweep first: it also writes the random-weight folder that both ways then load
    sweep_wall = timed(["-m", *common, f"accel.cache_interval={','.join(map(str, INTERVALS))}",
                        f"accel.cache_branch_id={','.join(map(str, BRANCHES))}",
                        f"hydra.sweep.dir={out / 'sweep'}", f"summary_path={out / 'sweep_all.csv'}"])
    naive_wall = 0.0
    for interval in INTERVALS:
        for branch in BRANCHES:
            naive_wall += timed([*common, f"accel.cache_interval={interval}", f"accel.cache_branch_id={branch}",
                                 f"hydra.run.dir={out / 'naive' / f'{interval}_{branch}'}", f"summary_path={out / 'naive.csv'}"])

    sweep_rows, naive_rows = pd.read_csv(out / "sweep" / "summary.csv"), pd.read_csv(out / "naive.csv")
    report = {
        "jobs": len(sweep_rows),
        "all_ok": bool((sweep_rows.status == "ok").all() and (naive_rows.status == "ok").all()),
        "device": str(sweep_rows.device_name.iloc[0]),
        "sweep_wall_s": sweep_wall,
        "sweep_pipeline_s": pipeline_seconds(sweep_rows),
        "baselines_measured_by_sweep": int((~sweep_rows.baseline_cached.astype(bool)).sum()),
        "naive_wall_s": naive_wall,
        "naive_pipeline_s": pipeline_seconds(naive_rows),
        "speedup_of_sweep": naive_wall / sweep_wall,
    }
    report["sweep_fraction_in_pipeline"] = report["sweep_pipeline_s"] / sweep_wall
    report["targets_met"] = report["speedup_of_sweep"] >= 3 and report["sweep_fraction_in_pipeline"] >= 0.7
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report.items():
        print(f"{key:30} {value:.3f}" if isinstance(value, float) else f"{key:30} {value}")


if __name__ == "__main__":
    main()
