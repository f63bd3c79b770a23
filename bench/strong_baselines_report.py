"""The strong-baseline table from `bench/strong_baselines.sh` sweeps: per method, eager, under CUDA
graphs and on the fast recipe, its speedup over the eager, the CUDA-graph and the fast baseline, the
spread of the per-pass speedups, compile times, achieved TFLOP/s, and the images of the method on a
stack against the same method eager.

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

from accel_bench.accelerators import METHODS
from accel_bench.accelerators.whole_step import STEP
from accel_bench.metrics import psnr_db

# beyond compile, the methods that change only how the pipeline computes: the fast recipe's
RECIPE = {name for name, cls in METHODS.items() if cls.same_arithmetic and name != "compile"}


def _stack(methods: list[str], params: dict[str, Any]) -> str:
    """What a side runs on: eager, CUDA graphs (torch.compile; the whole step or the UNet), or the fast recipe."""
    whole_step = ", whole step" if STEP in params.get("compile_targets", []) else ""
    if RECIPE & set(methods):
        return "fast recipe" + whole_step
    if "compile" in methods:
        return "CUDA graphs" + whole_step
    return "eager"


def _images(run_dir: Path) -> Optional[np.ndarray]:
    folder = run_dir / "images" / "accel"
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    return np.stack([np.asarray(Image.open(f), dtype=np.float32) / 255 for f in files]) if files else None


def _float(value: str) -> Optional[float]:
    return float(value) if value not in ("", None) else None


def records(sweep_dir: Path) -> list[dict[str, Any]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    eager_images = {  # by method: the images of the same methods eager
        "+".join(json.loads(row["accel_methods"])): _images(Path(row["run_dir"]))
        for row in rows
        if row["status"] == "ok" and _stack(json.loads(row["accel_methods"]), {}) == "eager"
    }
    out = []
    for row in rows:
        methods = json.loads(row["accel_methods"])
        method = "+".join(m for m in methods if not METHODS[m].same_arithmetic) or "none"
        record = {
            "pipeline": row["pipeline_label"],
            "batch_size": int(row["batch_size"]),
            "method": method,
            "stack": _stack(methods, json.loads(row["accel_params"] or "{}")),
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
            "tflops": _float(row["tflops"]),
            "base_tflops": _float(row["base_tflops"]),
            "peak_share": _float(row["peak_share"]),
            "device_name": row["device_name"],
            "versions": json.loads(row["versions"] or "{}"),
            "psnr_vs_eager_db": None,
        }
        if record["speedup"] is not None:
            record["speedup_spread"] = (record["speedup_max"] - record["speedup_min"]) / record["speedup"]
        if row["status"] == "ok" and record["stack"] != "eager" and eager_images.get(method) is not None:
            stacked = _images(Path(row["run_dir"]))
            record["psnr_vs_eager_db"] = float(np.min(psnr_db(eager_images[method], stacked)))  # the worst image
        out.append(record)
    return out


def table(all_records: list[dict[str, Any]]) -> str:
    lines = [
        "| pipeline | batch | method | on | baseline | speedup [min-max] | spread | s / image (base) | compile s (base) "
        "| TFLOP/s (base) | PSNR vs eager method |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in all_records:
        if r["status"] != "ok":
            lines.append(
                f"| {r['pipeline']} | {r['batch_size']} | {r['method']} | {r['stack']} | {r['baseline']} "
                f"| {r['status']}: {(r['error'] or '')[:160]} | | | | | |"
            )
            continue
        compile_s = " / ".join(f"{v:.0f}" if v is not None else "-" for v in (r["compile_s"], r["base_compile_s"]))
        psnr = f"{r['psnr_vs_eager_db']:.1f} dB" if r["psnr_vs_eager_db"] is not None else "-"
        tflops = " (".join(f"{v:.0f}" if v is not None else "-" for v in (r["tflops"], r["base_tflops"])) + ")"
        lines.append(
            f"| {r['pipeline']} | {r['batch_size']} | {r['method']} | {r['stack']} | {r['baseline']} "
            f"| **{r['speedup']:.2f}x** [{r['speedup_min']:.2f}-{r['speedup_max']:.2f}] | {r['speedup_spread']:.1%} "
            f"| {r['latency_s']:.4f} ({r['base_latency_s']:.4f}) | {compile_s} | {tflops} | {psnr} |"
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
