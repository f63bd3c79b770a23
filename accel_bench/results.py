"""The result row: one typed record per run, written as ``result.json`` and appended to summary CSVs."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from filelock import FileLock

STATUSES = ("ok", "failed", "invalid")


@dataclass
class ResultRow:
    """Latencies are seconds per image, batch times seconds per batch, FLOPs GFLOP per image.

    ``speedup`` = base_latency_s / latency_s; ``flops_ratio`` = base_flops_per_image /
    flops_per_image (the speedup the FLOPs alone would predict); ``clip_loss`` =
    (base_clip_score - clip_score) / base_clip_score; PSNR and SSIM compare each accelerated
    image with the baseline image of the same prompt.
    """

    run_id: str  # sha1 of the resolved run config: the same config gives the same id
    timestamp: str
    status: str
    error: Optional[str] = None
    pipeline: Optional[str] = None
    weights: Optional[str] = None
    scheduler: Optional[str] = None
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    num_images: Optional[int] = None
    resolution: Optional[int] = None
    accel: Optional[str] = None
    accel_params: dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None
    device: Optional[str] = None
    dtype: Optional[str] = None
    latency_s: Optional[float] = None
    base_latency_s: Optional[float] = None
    speedup: Optional[float] = None
    batch_time_median_s: Optional[float] = None
    base_batch_time_median_s: Optional[float] = None
    images_per_s: Optional[float] = None
    flops_per_image: Optional[float] = None
    base_flops_per_image: Optional[float] = None
    flops_ratio: Optional[float] = None
    peak_mem_gb: Optional[float] = None
    clip_score: Optional[float] = None
    base_clip_score: Optional[float] = None
    clip_loss: Optional[float] = None
    clip_model: Optional[str] = None
    clip_weights: Optional[str] = None
    psnr_db: Optional[float] = None
    ssim: Optional[float] = None
    versions: dict[str, str] = field(default_factory=dict)
    # beyond the contract's columns
    pipeline_label: Optional[str] = None
    scheduler_class: Optional[str] = None
    model_source: Optional[str] = None
    device_name: Optional[str] = None
    guidance_scale: Optional[float] = None
    warmup_batches: Optional[int] = None
    batch_time_min_s: Optional[float] = None
    batch_time_max_s: Optional[float] = None
    base_batch_time_min_s: Optional[float] = None
    base_batch_time_max_s: Optional[float] = None
    base_images_per_s: Optional[float] = None
    base_peak_mem_gb: Optional[float] = None
    pipeline_load_s: Optional[float] = None
    run_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not one of {STATUSES}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_csv(self) -> dict[str, str]:
        return {key: _csv_cell(value) for key, value in self.to_json().items()}


COLUMNS = tuple(f.name for f in dataclasses.fields(ResultRow))


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(value)


def write_result(run_dir: Path, row: ResultRow, config: dict[str, Any]) -> Path:
    """``<run dir>/result.json``: the row and the resolved config that produced it."""
    path = Path(run_dir) / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"row": row.to_json(), "config": config}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def append_summary(path: Path, row: ResultRow) -> None:
    """Append one row under a file lock; a new file gets the header, a foreign header is refused."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f".{path.name}.lock"))):
        exists = path.exists() and path.stat().st_size > 0
        if exists:
            with path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != COLUMNS:
                raise ValueError(f"{path} has other columns than this version of accel_bench writes; set summary_path to a new file")
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if not exists:
                writer.writeheader()
            writer.writerow(row.to_csv())
