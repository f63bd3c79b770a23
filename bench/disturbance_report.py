"""Collate bench/disturbance.sh's results into one report: what each watch saw, and whether the figures held.

python bench/disturbance_report.py bench/results/disturbance   # writes report.json there and prints it
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accel_bench.record import Row, read_rows


def _side(side) -> dict:
    return {
        "latency_s": side.latency_s,
        "latency_spread": side.latency_spread,
        "batch_max_over_median": side.batch_time_max_s / side.batch_time_median_s if side.batch_time_median_s else None,
        "warmup_batches": side.warmup_batches,
        "warmup_stable": side.warmup_stable,
        "dropped_passes": side.dropped_passes,
        "outlier_batches": side.outlier_batches,
        "contended_batches": side.contended_batches,
        "disturbed_passes": side.disturbed_passes,
        "other_gpu_work": side.other_gpu_work,
        "host_wait_max": side.host_wait_max,
    }


def _row(row: Row) -> dict:
    return {
        "accel": row.accel,
        "baseline": row.baseline,
        "steps": row.steps,
        "status": row.status,
        "speedup": row.speedup,
        "speedup_range": [row.speedup_min, row.speedup_max],
        "repeats": row.repeats,
        "isolation": row.isolation,
        "disturbed": row.disturbed,
        "accelerated": _side(row.accelerated),
        "base": _side(row.base),
        "device_name": row.device_name,
        "timestamp": row.timestamp,
    }


def _left_out(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith(("left out", "MISSING", "0 entries"))]


def main(folder: str) -> None:
    root = Path(folder)
    report: dict = {}
    for name in ("compiled", "other"):
        if (root / f"{name}_rows.csv").exists():
            report[f"{name}_rows"] = [_row(r) for r in read_rows(root / f"{name}_rows.csv")]
    for which in ("quiet", "busy"):
        summary = root / f"cpu_{which}_summary.csv"
        if summary.exists():
            rows = read_rows(summary)
            report[f"cpu_{which}"] = {
                "rows": [_row(r) for r in rows],
                "disturbed_rows": sum(bool(r.disturbed) for r in rows),
                "postprocess": _left_out(root / f"cpu_{which}_postprocess.log"),
            }
    evaluations = {}
    for path in sorted(root.glob("*evaluator_*.json")):
        m = json.loads(path.read_text())
        evaluations[path.stem.removeprefix("evaluator_").replace("cpu_evaluator_", "cpu_")] = {
            key: m.get(key)
            for key in (
                "speedup",
                "speedup_low",
                "speedup_high",
                "passed",
                "reason",
                "latency_s",
                "base_latency_s",
                "leftover_gpu_s",
                "clean_passes",
                "disturbed",
                "isolation",
                "repeats",
            )
        } | {"baseline_leftover_gpu_s": m["baseline"].get("leftover_gpu_s")}
    if evaluations:
        # the GPU's clean evaluations are the reference for the GPU ones; the CPU pair is read on its own
        clean = [e["base_latency_s"] for k, e in evaluations.items() if k.startswith("plain") and e["base_latency_s"]]
        reference = sum(clean) / len(clean) if clean else None
        for key, e in evaluations.items():
            gpu = not key.startswith("cpu_")
            e["base_latency_vs_clean"] = (
                e["base_latency_s"] / reference if gpu and reference and e["base_latency_s"] else None
            )
        report["evaluator"] = evaluations
    text = json.dumps(report, indent=2, sort_keys=True, default=float) + "\n"
    (root / "report.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1])
