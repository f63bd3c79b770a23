"""Packing on a real Slurm cluster: one 12-job sweep run with each ``jobs_per_task`` in turn.

For each K: the sweep's wall time (command start to exit), its tasks, its pipeline loads and the
share of its job time spent inside measured pipeline calls (the tally's figure, from the rows'
``job_s``, which for a task's first job includes the process's start). Target: the default K at
least 2x faster in wall time than K=1.

    scripts/local_slurm.sh start
    python bench/cluster_packing.py --out /tmp/cp --k 1 2 4 6 12   # one run of bench/results/cluster_packing/reports.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from accel_bench.sweep.jobs import sweep_cost  # noqa: E402
from accel_bench.sweep.layout import SweepLayout  # noqa: E402

GRID = [
    "accel=deepcache",
    "accel.cache_interval=2,3,4,5",
    "accel.cache_branch_id=0,1,2",
]  # 12 jobs, as bench/sweep_efficiency.py
SETTINGS = ["steps=20", "num_prompts=8", "batch_size=4"]  # the tiny pipeline on the CPU, run.py's other defaults
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=null",
]


def default_jobs_per_task() -> int:
    text = (REPO / "conf" / "hydra" / "launcher" / "slurm.yaml").read_text()
    return int(re.search(r"^jobs_per_task:\s*(\d+)", text, re.M).group(1))


def run_sweep(out: Path, k: int) -> dict:
    sweep_dir = out / f"sweep_k{k}"
    args = [
        *SLURM,
        f"hydra.launcher.jobs_per_task={k}",
        *GRID,
        *SETTINGS,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={out / 'all.csv'}",
    ]
    began_utc = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    began = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "run.py"), "-m", *args], cwd=out, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"the K={k} sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    cost = sweep_cost(SweepLayout(sweep_dir), began_utc)
    tasks = int(re.search(r"in (\d+) slurm tasks", done.stdout).group(1))
    return {
        "jobs_per_task": k,
        "wall_s": wall,
        "tasks": tasks,
        "jobs": cost.jobs,
        "pipeline_loads": cost.pipeline_loads,
        "job_s": cost.job_s,
        "measured_s": cost.measured_s,
        "measured_share": cost.measured_share,
        "command": "python run.py -m " + " ".join(args),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[1, default_jobs_per_task()])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    subprocess.run(
        [
            sys.executable,
            str(REPO / "run.py"),
            *SETTINGS,
            "num_prompts=1",
            "steps=2",
            f"summary_path={args.out / 'warm.csv'}",
            f"hydra.run.dir={args.out / 'warm'}",
        ],
        check=True,
        capture_output=True,
    )  # the random-weight folder, untimed
    results = [run_sweep(args.out, k) for k in args.k]
    default = default_jobs_per_task()
    by_k = {r["jobs_per_task"]: r for r in results}
    report = {
        "machine": {
            "host": platform.node(),
            "cpu": next(
                (
                    line.split(":", 1)[1].strip()
                    for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")
                ),
                platform.processor(),
            ),
            "cores": os.cpu_count(),
            "slurm": subprocess.run(["sinfo", "-V"], capture_output=True, text=True).stdout.strip(),
        },
        "settings": GRID + SETTINGS + SLURM,
        "default_jobs_per_task": default,
        "runs": results,
    }
    if 1 in by_k and default in by_k:
        report["default_vs_k1_wall"] = by_k[1]["wall_s"] / by_k[default]["wall_s"]
        report["target_met"] = report["default_vs_k1_wall"] >= 2.0
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'K':>3} {'wall s':>8} {'tasks':>6} {'loads':>6} {'job s':>8} {'measured':>9}")
    for r in results:
        print(
            f"{r['jobs_per_task']:>3} {r['wall_s']:>8.1f} {r['tasks']:>6} {r['pipeline_loads']:>6} {r['job_s']:>8.1f} {r['measured_share']:>9.1%}"
        )
    if "default_vs_k1_wall" in report:
        print(f"default K={default}: {report['default_vs_k1_wall']:.2f}x less wall time than K=1 (target 2x)")


if __name__ == "__main__":
    main()
