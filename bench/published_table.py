"""The published-speedups table: our speedups per pipeline x method x batch size, next to the published ones.

Reads the summary rows of ``+sweep=published`` runs (any number of CSVs, e.g. one per pipeline)
and prints a Markdown table for bench/README.md; with ``--op-counts``, each method's ratios of aten
operations and of Python time outside them per pipeline call (bench/pipeline_op_count.py) beside
its FLOPs ratio.

    python bench/published_table.py bench/results/published/*.csv --op-counts bench/results/pipeline_op_count/*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from accel_bench.record import read_frame

PIPELINES = {"sd15": "SD1.5", "sd21": "SD2.1", "sdxl": "SDXL"}

# What the methods' authors (or diffusers' docs) report, for the settings the sweep reproduces.
PUBLISHED = {
    ("sd15", "deepcache"): "about 2.3x at 50 steps (DeepCache paper)",
    ("sd21", "deepcache"): "about 2.3x, interval 3 branch 0 (diffusers' DeepCache docs)",
    ("sdxl", "deepcache"): "2.6x, interval 3 branch 0, 50 steps (DeepCache README: 17.52 s -> 6.71 s)",
    ("sdxl", "tgate"): "1.9x, gate 10 of 25 (T-GATE README: 53.2 s -> 27.9 s on a 1080 Ti, MACs 1.77x)",
    ("*", "tome"): "about 1.0x at batch 1 with PyTorch's fused attention",
}


def method(row: pd.Series) -> str:
    """A readable name for the method and the parameters that distinguish it in the sweep."""
    p = json.loads(row.accel_params)
    parts = []
    if "gate_step" in p:
        parts.append(f"T-GATE gate {p['gate_step']}/{row.steps}")
    if "cache_interval" in p:
        parts.append(f"DeepCache i{p['cache_interval']} b{p['cache_branch_id']}")
    if "ratio" in p:
        parts.append(f"ToMe {p['ratio']} (max_downsample {p['max_downsample']})")
    return " + ".join(parts)


def published(row: pd.Series) -> str:
    params = json.loads(row.accel_params)
    if row.accel == "deepcache" and (params["cache_interval"], params["cache_branch_id"]) != (3, 0):
        return ""  # the published DeepCache figures are for interval 3, branch 0
    if row.accel == "tgate" and row.steps != 25:
        return ""  # T-GATE's is for gate step 10 of 25
    return PUBLISHED.get((row.pipeline, row.accel), PUBLISHED.get(("*", row.accel), ""))


def speedup(row: pd.Series) -> str:
    if row.status != "ok":
        return row.status
    return f"{row.speedup:.2f}x [{row.speedup_min:.2f}-{row.speedup_max:.2f}]"


def job_key(pipeline: str, accel: str, steps: int, params: dict) -> tuple:
    return pipeline, accel, int(steps), json.dumps(params, sort_keys=True)


def host_ratios(paths: list[Path]) -> dict[tuple, tuple[float, float]]:
    """Baseline over accelerated (operations, Python time) per pipeline call, per job of the published sweep."""
    ratios = {}
    for path in paths:
        report = json.loads(path.read_text())
        for job in report["jobs"]:
            key = job_key(report["pipeline"], job["accel"], job["steps"], job["accel_params"])
            ratios[key] = (job["operation_ratio"], job["python_time_ratio"])
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summaries", nargs="+", type=Path, help="summary CSVs of +sweep=published runs")
    parser.add_argument("--op-counts", nargs="*", type=Path, default=[], help="bench/pipeline_op_count.py reports")
    options = parser.parse_args()
    rows = pd.concat([read_frame(path) for path in options.summaries], ignore_index=True)
    rows = rows.drop_duplicates(subset=["run_id"], keep="last")  # a resumed sweep's latest row per job
    rows["method"] = rows.apply(method, axis=1)
    rows["published"] = rows.apply(published, axis=1)
    ratios = host_ratios(options.op_counts)
    rows["host_ratios"] = [
        ratios.get(job_key(r.pipeline, r.accel, r.steps, json.loads(r.accel_params))) for r in rows.itertuples()
    ]
    batch_sizes = sorted(rows.batch_size.unique())
    print(
        "| pipeline | method | "
        + " | ".join(f"batch {b}" for b in batch_sizes)
        + " | FLOPs ratio | operation ratio | Python time ratio | published |"
    )
    print("| --- | --- | " + " | ".join("---" for _ in batch_sizes) + " | --- | --- | --- | --- |")
    order = {name: i for i, name in enumerate(PIPELINES)}
    for (pipeline, name), group in sorted(
        rows.groupby(["pipeline", "method"]), key=lambda item: (order.get(item[0][0], 99), item[0][1])
    ):
        by_batch = {row.batch_size: row for _, row in group.iterrows()}
        cells = [speedup(by_batch[b]) if b in by_batch else "" for b in batch_sizes]
        flops = sorted({f"{r.flops_ratio:.2f}x" for r in by_batch.values() if r.status == "ok"})
        host = group.host_ratios.dropna()
        host_cells = [f"{ratio:.2f}x" for ratio in host.iloc[0]] if len(host) else ["", ""]
        print(
            f"| {PIPELINES.get(pipeline, pipeline)} | {name} | "
            + " | ".join(cells)
            + f" | {', '.join(flops)} | {' | '.join(host_cells)} | {group.published.iloc[0]} |"
        )
    devices = sorted(rows.device_name.dropna().unique())
    print(f"\n{len(rows)} rows; device: {', '.join(devices)}")


if __name__ == "__main__":
    main()
