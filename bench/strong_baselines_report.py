"""The strong-baseline table from `bench/strong_baselines.sh` sweeps: per method, eager and
under CUDA graphs, its speedup over the eager and over the CUDA-graph baseline, the spread of the
per-pass speedups, compile times, and the compiled method's images against its eager images.

    python bench/strong_baselines_report.py SWEEP_DIR [SWEEP_DIR ...] --out FOLDER

Writes FOLDER/report.json (one record per row, with ``psnr_vs_eager_db``) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from accel_bench.metrics import psnr_db


def _images(run_dir: Path) -> Optional[np.ndarray]:
    folder = run_dir / "images" / "accel"
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    return np.stack([np.asarray(Image.open(f), dtype=np.float32) / 255 for f in files]) if files else None


def _float(value: str) -> Optional[float]:
    return float(value) if value not in ("", None) else None


def records(sweep_dir: Path) -> list[dict[str, Any]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    eager_images = {
        row["accel"]: _images(Path(row["run_dir"]))
        for row in rows
        if row["status"] == "ok" and "compile" not in json.loads(row["accel_methods"])
    }
    out = []
    for row in rows:
        methods = json.loads(row["accel_methods"])
        method = "+".join(m for m in methods if m != "compile") or "none"
        record = {
            "pipeline": row["pipeline_label"],
            "batch_size": int(row["batch_size"]),
            "method": method,
            "cuda_graphs": "compile" in methods,
            "baseline": row["baseline"],
            "status": row["status"],
            "error": row["error"] or None,
            "num_images": _float(row["num_images"]),
            "speedup": _float(row["speedup"]),
            "speedup_min": _float(row["speedup_min"]),
            "speedup_max": _float(row["speedup_max"]),
            "latency_s": _float(row["latency_s"]),
            "base_latency_s": _float(row["base_latency_s"]),
            "latency_spread": _float(row["latency_spread"]),
            "base_latency_spread": _float(row["base_latency_spread"]),
            "compile_s": _float(row["compile_s"]),
            "base_compile_s": _float(row["base_compile_s"]),
            "psnr_vs_baseline_db": _float(row["psnr_db"]),
            "peak_mem_gb": _float(row["peak_mem_gb"]),
            "device_name": row["device_name"],
            "versions": json.loads(row["versions"] or "{}"),
            "psnr_vs_eager_db": None,
        }
        if record["speedup"] is not None:
            record["speedup_spread"] = (record["speedup_max"] - record["speedup_min"]) / record["speedup"]
        eager_accel = row["accel"].removesuffix("_compile") if row["accel"] != "compile" else None
        if row["status"] == "ok" and record["cuda_graphs"] and eager_images.get(eager_accel) is not None:
            compiled = _images(Path(row["run_dir"]))
            record["psnr_vs_eager_db"] = float(np.min(psnr_db(eager_images[eager_accel], compiled)))  # the worst image
        out.append(record)
    return out


def table(all_records: list[dict[str, Any]]) -> str:
    lines = [
        "| pipeline | batch | method | CUDA graphs | baseline | speedup [min-max] | spread | s / image (base) | compile s (base) | PSNR vs eager method |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in all_records:
        if r["status"] != "ok":
            lines.append(
                f"| {r['pipeline']} | {r['batch_size']} | {r['method']} | {'yes' if r['cuda_graphs'] else 'no'} | {r['baseline']} "
                f"| {r['status']}: {(r['error'] or '')[:160]} | | | | |"
            )
            continue
        compile_s = " / ".join(f"{v:.0f}" if v is not None else "-" for v in (r["compile_s"], r["base_compile_s"]))
        psnr = f"{r['psnr_vs_eager_db']:.1f} dB" if r["psnr_vs_eager_db"] is not None else "-"
        lines.append(
            f"| {r['pipeline']} | {r['batch_size']} | {r['method']} | {'yes' if r['cuda_graphs'] else 'no'} | {r['baseline']} "
            f"| **{r['speedup']:.2f}x** [{r['speedup_min']:.2f}-{r['speedup_max']:.2f}] | {r['speedup_spread']:.1%} "
            f"| {r['latency_s']:.4f} ({r['base_latency_s']:.4f}) | {compile_s} | {psnr} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    all_records = [r for d in args.sweep_dirs for r in records(d)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(all_records, indent=1) + "\n")
    text = table(all_records)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
