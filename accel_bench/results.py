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
    family: Optional[str] = None  # sd | sdxl
    model_id: Optional[str] = None  # the configured hub id or folder (the canonical one for random weights)
    scheduler_class: Optional[str] = None
    scheduler_label: Optional[str] = None
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    accel_methods: list[str] = field(default_factory=list)  # in application order
    model_source: Optional[str] = None
    device_name: Optional[str] = None
    host: Optional[str] = None  # the machine (cluster node) the job ran on
    host_cpu: Optional[str] = None  # launch-bound pipelines (small models, cached steps) run as fast as it lets them
    guidance_scale: Optional[float] = None
    speedup_min: Optional[float] = None  # speedup is the median of per-repeat ratios; these their range
    speedup_max: Optional[float] = None
    repeats: Optional[int] = None  # passes over the prompt set, per side
    interleaved: Optional[bool] = None  # baseline and accelerated passes alternated (baseline re-measured)
    latency_min_s: Optional[float] = None  # per-repeat latencies: range and (max - min) / median
    latency_max_s: Optional[float] = None
    latency_spread: Optional[float] = None
    base_latency_min_s: Optional[float] = None
    base_latency_max_s: Optional[float] = None
    base_latency_spread: Optional[float] = None
    warmup_batches: Optional[int] = None  # warm-up batches run (auto: until two agreed)
    base_warmup_batches: Optional[int] = None
    warmup_s: Optional[float] = None  # seconds of warm-up batches, accelerated side
    base_warmup_s: Optional[float] = None  # ... baseline side (spent by whichever job measured it)
    measured_s: Optional[float] = None  # seconds inside measured batches, all repeats, accelerated side
    base_measured_s: Optional[float] = None  # ... baseline side (spent by whichever job measured it)
    batch_time_min_s: Optional[float] = None
    batch_time_max_s: Optional[float] = None
    base_batch_time_min_s: Optional[float] = None
    base_batch_time_max_s: Optional[float] = None
    base_images_per_s: Optional[float] = None
    base_peak_mem_gb: Optional[float] = None
    flops_s: Optional[float] = None  # seconds of the untimed FLOPs-counting call, accelerated side
    base_flops_s: Optional[float] = None  # ... baseline side (spent by whichever job measured it)
    scoring_s: Optional[float] = None  # seconds of this job's CLIP scoring and PSNR / SSIM
    compile_s: Optional[float] = None  # torch.compile's cost: the accelerated side's warm-up beyond as many steady batches
    baseline: Optional[str] = None  # what the speedup is over: eager, or compile:<mode> (the UNet, whole graph)
    base_compile_s: Optional[float] = None  # ... the compiled baseline's (spent by whichever job measured it)
    pipeline_load_s: Optional[float] = None  # 0 when the process already had the pipeline
    baseline_cached: Optional[bool] = None  # reused a baseline measured earlier (this process or another job)
    job_s: Optional[float] = None  # wall seconds since the process's previous job (its first: since the process started)
    run_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not one of {STATUSES}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_csv(self) -> dict[str, str]:
        return {key: _csv_cell(value) for key, value in self.to_json().items()}


COLUMNS = tuple(f.name for f in dataclasses.fields(ResultRow))


def fmt(value: Optional[float], spec: str) -> str:
    """A figure for the console; "-" where there is none (a CPU's peak memory, a failed side)."""
    return "-" if value is None else format(value, spec)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
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


def _lock(path: Path) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_name(f".{path.name}.lock")))


def check_summary(path: Path) -> None:
    """Refuse a file that is not an accel_bench summary (``run_id`` and ``status`` columns)."""
    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if not {"run_id", "status"} <= set(header):
            raise ValueError(f"{path} is not an accel_bench summary (no run_id and status columns)")


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    check_summary(path)
    if not path.exists() or path.stat().st_size == 0:
        return list(COLUMNS), []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _rewrite(path: Path, rows: list[dict[str, str]], old_columns: list[str]) -> None:
    """Atomically write ``rows``: this version's columns first, then any an older version had."""
    columns = list(COLUMNS) + [c for c in old_columns if c not in COLUMNS]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def append_summary(path: Path, row: ResultRow) -> None:
    """Append one row under a file lock (safe when parallel jobs finish together).

    A summary written by another accel_bench version is rewritten with the union of the columns,
    so no recorded value is lost.
    """
    path = Path(path)
    with _lock(path):
        columns, rows = _read(path)
        if columns != list(COLUMNS) or not rows:
            _rewrite(path, rows + [row.to_csv()], columns)
            return
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow(row.to_csv())


def upsert_summary(path: Path, row: ResultRow) -> int:
    """Write ``row`` in place of an earlier row of the same job (``run_dir``); returns the row count.

    A sweep's summary stays one row per job when the sweep is resumed.
    """
    path = Path(path)
    with _lock(path):
        columns, rows = _read(path)
        jobs = [r.get("run_dir") for r in rows]
        if row.run_dir in jobs:
            rows[jobs.index(row.run_dir)] = row.to_csv()  # keep the job's place
        else:
            rows.append(row.to_csv())
        _rewrite(path, rows, columns)
        return len(rows)
