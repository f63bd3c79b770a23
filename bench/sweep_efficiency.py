"""Sweep efficiency: a 12-job DeepCache grid as one Hydra sweep vs the naive way.

The naive way is what the old scripts did per setting: one process per job, the model loaded
and the baseline re-measured every time. Targets: the sweep at least 3x faster, and at least
70% of its wall time inside measured and warm-up pipeline calls.

``--naive-jobs K`` runs only K of the 12 jobs the naive way (spread over the grid) when device
time is short; the naive wall time of the whole grid is then estimated as the sampled jobs' mean
fixed cost (wall time minus that job's own accelerated pipeline calls) times 12, plus every job's
accelerated pipeline calls as the sweep measured them. The report says which it is.

``--phase sweep`` then ``--phase naive`` (same ``--out``) split the work over two device calls of
at most 10 minutes each; the report says whether both ran on the same machine (its boot id).
The random-weight model folder is written before anything is timed, so neither way pays for it.

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

from accel_bench.record import read_frame

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
    accel = (rows.measured_s + rows.warmup_s).sum()
    measured_here = rows[~rows.baseline_cached.astype(bool)]
    base = (measured_here.base_measured_s + measured_here.base_warmup_s).sum()
    return float(accel + base)


def machine_id() -> str:
    boot_id = Path("/proc/sys/kernel/random/boot_id")
    return boot_id.read_text().strip() if boot_id.exists() else "unknown"


def write_model_folder(overrides: list[str]) -> None:
    """Write the random-weight folder untimed: a fresh machine has none, and both ways read it."""
    from accel_bench import config
    from accel_bench.pipelines import random_weights_dir

    cfg = config.compose_run_config(overrides)
    if cfg.pipeline.weights == "random":
        random_weights_dir(cfg.pipeline.architecture, cfg.cache_dir, config.resolve_device(cfg.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--tiny", action="store_true", help="tiny pipeline on the CPU (checks the script, not the targets)"
    )
    parser.add_argument("--naive-jobs", type=int, default=len(INTERVALS) * len(BRANCHES), help="jobs run the naive way")
    parser.add_argument("--phase", choices=("all", "sweep", "naive"), default="all")
    options = parser.parse_args()
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if options.tiny:
        common = ["pipeline=tiny", "accel=deepcache", "steps=10", "batch_size=2", "num_prompts=4"]
    else:
        common = [
            "pipeline=sd15",
            "pipeline.weights=random",
            "accel=deepcache",
            "steps=50",
            "batch_size=4",
            "num_prompts=16",
        ]

    write_model_folder(common)
    sweep_record = out / "sweep_wall.json"
    if options.phase in ("all", "sweep"):
        print(f"sweep of {len(INTERVALS) * len(BRANCHES)} jobs ...", flush=True)
        sweep_wall = timed(
            [
                "-m",
                *common,
                f"accel.cache_interval={','.join(map(str, INTERVALS))}",
                f"accel.cache_branch_id={','.join(map(str, BRANCHES))}",
                f"hydra.sweep.dir={out / 'sweep'}",
                f"summary_path={out / 'sweep_all.csv'}",
            ]
        )
        sweep_record.write_text(json.dumps({"sweep_wall_s": sweep_wall, "machine": machine_id()}) + "\n")
        print(f"sweep: {sweep_wall:.1f} s", flush=True)
        if options.phase == "sweep":
            return
    if not sweep_record.exists():
        sys.exit(f"--phase naive needs {sweep_record} from --phase sweep with the same --out")
    sweep_wall, sweep_machine = (json.loads(sweep_record.read_text())[k] for k in ("sweep_wall_s", "machine"))

    grid = [(interval, branch) for interval in INTERVALS for branch in BRANCHES]
    sampled = grid[:: max(1, len(grid) // options.naive_jobs)][: options.naive_jobs]
    print(f"{len(sampled)} naive job(s) ...", flush=True)
    naive_walls = {}
    for interval, branch in sampled:
        naive_walls[(interval, branch)] = timed(
            [
                *common,
                f"accel.cache_interval={interval}",
                f"accel.cache_branch_id={branch}",
                f"hydra.run.dir={out / 'naive' / f'{interval}_{branch}'}",
                f"summary_path={out / 'naive.csv'}",
            ]
        )

    sweep_rows, naive_rows = read_frame(out / "sweep" / "summary.csv"), read_frame(out / "naive.csv")
    params = [json.loads(r.accel_params) for r in sweep_rows.itertuples()]
    accel_s = {
        (p["cache_interval"], p["cache_branch_id"]): r.measured_s + r.warmup_s
        for p, r in zip(params, sweep_rows.itertuples())
    }
    fixed_per_job = sum(naive_walls[job] - accel_s[job] for job in sampled) / len(sampled)
    naive_wall = (
        sum(naive_walls.values()) if len(sampled) == len(grid) else fixed_per_job * len(grid) + sum(accel_s.values())
    )
    report = {
        "jobs": len(sweep_rows),
        "all_ok": bool((sweep_rows.status == "ok").all() and (naive_rows.status == "ok").all()),
        "device": str(sweep_rows.device_name.iloc[0]),
        "settings": common,
        "same_machine": sweep_machine == machine_id(),
        "sweep_wall_s": sweep_wall,
        "sweep_pipeline_s": pipeline_seconds(sweep_rows),
        "sweep_jobs_s": float(sweep_rows.job_s.sum()),  # the rest of the wall time: process start, imports, Hydra
        "baselines_measured_by_sweep": int((~sweep_rows.baseline_cached.astype(bool)).sum()),
        "naive_jobs_run": [
            f"cache_interval={i} cache_branch_id={b}: {wall:.1f} s" for (i, b), wall in naive_walls.items()
        ],
        "naive_wall_is_estimate": len(sampled) < len(grid),
        "naive_fixed_cost_per_job_s": fixed_per_job,
        "naive_wall_s": naive_wall,
        "naive_pipeline_s_of_jobs_run": pipeline_seconds(naive_rows),
        "speedup_of_sweep": naive_wall / sweep_wall,
    }
    report["sweep_fraction_in_pipeline"] = report["sweep_pipeline_s"] / sweep_wall
    report["targets_met"] = report["speedup_of_sweep"] >= 3 and report["sweep_fraction_in_pipeline"] >= 0.7
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report.items():
        print(f"{key:30} {value:.3f}" if isinstance(value, float) else f"{key:30} {value}")


if __name__ == "__main__":
    main()
