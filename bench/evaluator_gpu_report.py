"""Summarize bench/evaluator_gpu.sh: round-trip share, evaluator vs run.py, verdicts across evaluations.

python bench/evaluator_gpu_report.py sd15 --run summary.csv --evaluations eval_1 eval_2 eval_3 --out report.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
from pathlib import Path


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*metrics.json"))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step")
    parser.add_argument("--run", help="run.py's summary.csv (one row)")
    parser.add_argument("--evaluations", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    report: dict = {"step": args.step, "host": platform.node(), "evaluations": []}
    if args.run:
        (row,) = list(csv.DictReader(open(args.run)))
        report["run_py"] = {
            k: row[k]
            for k in (
                "speedup",
                "speedup_min",
                "speedup_max",
                "latency_s",
                "base_latency_s",
                "device_name",
                "accel_params",
            )
        }
    for folder in args.evaluations:
        tasks = []
        for m in _records(Path(folder)):
            gt = m.get("gt", m)
            tasks.append(
                {
                    "prompt_id": m.get("prompt_id"),
                    "target": m["target_speedup"],
                    "verdict": m["verdict"],
                    "passed": m["passed"],
                    "reason": m["reason"],
                    "speedup": m["speedup"],
                    "interval": [m["speedup_low"], m["speedup_high"]],
                    "repeats": m["repeats"],
                    "gt_speedup": gt["speedup"],
                    "gt_verdict": gt["verdict"],
                    "psnr_min_db": m["psnr_min_db"],
                    "round_trip_s": m["round_trip_s"],
                    "batch_time_s": m["batch_time_s"],
                    "round_trip_share": m["round_trip_share"],
                    "baseline_round_trip_s": m["baseline"]["round_trip_s"],
                    "baseline_batch_time_s": m["baseline"]["batch_time_s"],
                    "baseline_round_trip_share": m["baseline"]["round_trip_s"] / m["baseline"]["batch_time_s"],
                    "sandbox": m["sandbox"],
                    "input_seed": m["input_seed"],
                }
            )
        report["evaluations"].append({"folder": folder, "tasks": tasks})
    verdicts = {}
    for evaluation in report["evaluations"]:
        for t in evaluation["tasks"]:
            verdicts.setdefault(str(t["prompt_id"]), []).append(t["verdict"])
    report["same_verdict_every_time"] = all(len(set(v)) == 1 for v in verdicts.values())
    report["verdicts"] = verdicts
    shares = [
        t[k]
        for e in report["evaluations"]
        for t in e["tasks"]
        for k in ("round_trip_share", "baseline_round_trip_share")
    ]
    report["round_trip_share_max"] = max(shares)
    if args.run:
        run_speedup = float(report["run_py"]["speedup"])
        gts = [e["tasks"][0]["gt_speedup"] for e in report["evaluations"] if e["tasks"]]
        report["gt_speedup_vs_run_py"] = [g / run_speedup - 1 for g in gts]
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "evaluations"}, indent=2))


if __name__ == "__main__":
    main()
