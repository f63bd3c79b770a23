"""The search against the grid on the same space: selected entries and job-seconds, side by side.

    python bench/search_vs_grid.py --sweep deepcache --seeds 0 1 2     # CPU, tiny pipeline (~10 min)
    python bench/search_vs_grid.py --sweep deepcache tome --extra hydra/launcher=slurm    # the local Slurm
    python bench/search_vs_grid.py --pipeline sd15 --extra pipeline.weights=random dtype=fp16 steps=20

Runs the grid once (``hydra/sweeper=grid``) and the search (``hydra/sweeper=search``) once per seed,
each into its own sweep folder, with the same overrides; post-process's selection (``select``, every
budget of ``--budgets``) on each. Per budget: the grid's best speedup, each search's selected speedup
(within 5% of the grid's? the same FLOPs as the grid's best?), whether the search's entry is inside
the budget on the grid's measurement of the same setting, and every sweep's job-seconds (the sum of its rows' ``job_s``). Speedups of two
sweeps differ by the machine's drift between them (each sweep has its own baseline), so each choice is
also judged by the grid's own measurement of the same setting (``within_5_percent_on_grid``). Writes
``search_vs_grid_<pipeline>.json`` in ``--out`` with command, machine and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sweep(folder: Path, sweeper: str, args: argparse.Namespace, extra: list[str]) -> None:
    named = [f"+sweep=[{','.join(args.sweep)}]"]
    command = [sys.executable, str(REPO / "run.py"), "-m", *named, f"hydra/sweeper={sweeper}"]
    command += [f"pipeline={args.pipeline}", f"steps={args.steps}", f"batch_size={args.batch}"]
    command += [f"num_prompts={args.prompts}", f"hydra.sweep.dir={folder}", f"summary_path={folder / 'log.csv'}"]
    budgets = "[" + ",".join(str(b) for b in args.budgets) + "]"
    if sweeper == "search":
        command += [f"hydra.sweeper.budgets={budgets}"]
    subprocess.run([*command, *extra], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sweep", nargs="+", default=["deepcache"], help="named sweeps (conf/sweep/): the space of both"
    )
    parser.add_argument("--pipeline", default="tiny")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every sweep")
    parser.add_argument("--work", default="/tmp/search_vs_grid")
    parser.add_argument("--reuse-grid", action="store_true", help="the grid sweep in --work as it is (not resumed)")
    parser.add_argument("--out", default="bench/results/search_vs_grid")
    args = parser.parse_args()
    from accel_bench.postprocess.records import read_summaries
    from accel_bench.postprocess.select import select
    from accel_bench.record import read_rows

    work = Path(args.work)
    grid_dir = work / "grid"
    if not (args.reuse_grid and (grid_dir / "summary.csv").exists()):
        sweep(grid_dir, "grid", args, args.extra)
    grid_rows, _ = read_summaries([grid_dir])
    grid_best = {e.quality_budget: e for e in select(grid_rows, args.budgets, include_random=True)}
    by_setting = {(m.accel, json.dumps(m.params, sort_keys=True)): m for m in grid_rows}
    grid_s = sum(r.job_s or 0.0 for r in read_rows(grid_dir / "summary.csv"))
    flops_ratios = {  # FLOPs ratio per setting: two settings with the same one do the same work
        (r.accel, json.dumps(r.accel_params, sort_keys=True)): r.flops_ratio
        for r in read_rows(grid_dir / "summary.csv")
        if r.status == "ok"
    }
    searches = []
    for seed in args.seeds:
        folder = work / f"search_{seed}"
        sweep(folder, "search", args, [*args.extra, f"hydra.sweeper.seed={seed}"])
        rows = read_rows(folder / "summary.csv")
        measured, _ = read_summaries([folder])
        chosen = {e.quality_budget: e for e in select(measured, args.budgets, include_random=True)}
        per_budget = []
        for budget in sorted(args.budgets):
            best, mine = grid_best.get(budget), chosen.get(budget)
            on_grid = by_setting.get((mine.accel, json.dumps(mine.params, sort_keys=True))) if mine else None
            per_budget.append(
                {
                    "budget": budget,
                    "grid_speedup": best.speedup if best else None,
                    "grid_choice": f"{best.accel} {json.dumps(best.params, sort_keys=True)}" if best else None,
                    "search_speedup": mine.speedup if mine else None,
                    "search_choice": f"{mine.accel} {json.dumps(mine.params, sort_keys=True)}" if mine else None,
                    "search_loss": mine.loss if mine else None,
                    "grid_loss_of_search_choice": on_grid.loss if on_grid else None,
                    # the same setting as the grid measured it: both sides of the comparison from one sweep
                    "grid_speedup_of_search_choice": on_grid.speedup if on_grid else None,
                    "within_5_percent": bool(best and mine and mine.speedup >= 0.95 * best.speedup),
                    "within_5_percent_on_grid": bool(best and on_grid and on_grid.speedup >= 0.95 * best.speedup),
                    "inside_budget_on_grid": bool(on_grid and on_grid.loss <= budget),
                    # the same FLOPs as the grid's best: a gap between them on the grid is the grid's noise
                    "same_work_as_grid_best": bool(best and mine and _same_work(flops_ratios, best, mine)),
                    # did the search measure the grid's choice in full (then only measurement noise parted them)?
                    "grid_choice_measured_in_full": bool(
                        best
                        and any(
                            m.accel == best.accel and m.params == best.params and m.search_stage != "screen"
                            for m in measured
                        )
                    ),
                }
            )
        spent = sum(r.job_s or 0.0 for r in rows)
        searches.append(
            {
                "seed": seed,
                "jobs": len(rows),
                "screened": sum(r.search_stage == "screen" for r in rows),
                "full": sum(r.search_stage == "full" for r in rows),
                "job_s": spent,
                "share_of_grid_job_s": spent / grid_s if grid_s else None,
                "budgets": per_budget,
            }
        )
        print(json.dumps(searches[-1]), flush=True)
        write(args, grid_dir, grid_s, searches)  # after every search: a run cut short keeps what it measured


def _same_work(flops_ratios: dict, a, b) -> bool:
    flops = [flops_ratios.get((m.accel, json.dumps(m.params, sort_keys=True))) for m in (a, b)]
    return None not in flops and abs(flops[0] - flops[1]) <= 1e-3 * flops[0]


def write(args: argparse.Namespace, grid_dir: Path, grid_s: float, searches: list[dict]) -> None:
    from accel_bench.record import read_rows

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid_rows = read_rows(grid_dir / "summary.csv")
    record = {
        "command": "python bench/search_vs_grid.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "host": platform.node(),
            "cpu": platform.processor(),
            "device": next((r.device_name for r in grid_rows if r.device_name), None),
        },
        "grid": {"jobs": len(grid_rows), "job_s": grid_s},
        "searches": searches,
    }
    (out / f"search_vs_grid_{args.pipeline}_{'_'.join(args.sweep)}.json").write_text(
        json.dumps(record, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
