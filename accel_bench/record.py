"""The row: one typed record per run, written as ``result.json`` (nested) and to summary CSVs (flat), and read
back from them by the same code."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from filelock import FileLock

from .watch.compiles import compiled_words
from .watch.device import busiest

if TYPE_CHECKING:  # measure imports torch; a row is read and written without it (sweepers, launchers)
    from .measure import Measurement

STATUSES = ("ok", "failed", "invalid")
RESULT_FILE = "result.json"  # in each run's own folder: the row and the resolved config that produced it


@dataclass
class Side:
    """One side of the comparison as the row keeps it: latencies in seconds per image, batch times in
    seconds per batch, FLOPs in GFLOP per image, run costs in seconds. Flat in the CSV: the
    accelerated side's columns unprefixed, the baseline's with ``base_``."""

    latency_s: Optional[float] = None  # median over repeats of each pass's seconds per image
    latency_min_s: Optional[float] = None  # per-repeat latencies: range and (max - min) / median
    latency_max_s: Optional[float] = None
    latency_spread: Optional[float] = None
    batch_time_median_s: Optional[float] = None
    batch_time_min_s: Optional[float] = None
    batch_time_max_s: Optional[float] = None
    images_per_s: Optional[float] = None
    flops_per_image: Optional[float] = None  # None: not counted (a compiled side, count_flops=false)
    peak_mem_gb: Optional[float] = None  # None on a CPU
    clip_score: Optional[float] = None
    warmup_batches: Optional[int] = None  # warm-up batches run (auto: until two agreed), a FLOPs-counting one included
    warmup_inherited: Optional[bool] = None  # one warm-up batch: the process was warm from its previous measured passes
    warmup_s: Optional[float] = (
        None  # seconds of timed warm-up batches (the baseline's: spent by whichever job measured it)
    )
    measured_s: Optional[float] = None  # seconds inside measured batches, all repeats
    flops_s: Optional[float] = None  # seconds of the untimed FLOPs-counting call (the first warm-up batch)
    flops_inherited: Optional[bool] = None  # FLOPs taken from an earlier side of the same setting in this process
    flops_eager: Optional[bool] = (
        None  # FLOPs counted without the side's same-arithmetic methods (compile, quantization, ...)
    )
    tflops: Optional[float] = None  # achieved TFLOP/s: FLOPs per image over seconds per image
    peak_share: Optional[float] = None  # tflops over the device's dense peak at the run's dtype (None: peak unknown)
    compile_s: Optional[float] = None  # torch.compile's cost: the warm-up beyond as many steady batches
    pass_latencies_s: list[float] = field(default_factory=list)  # every pass run, in order, left-out ones included
    # What may have disturbed the figures above (accel_bench.watch), counted over the passes they use:
    warmup_stable: Optional[bool] = None  # auto warm-up: False when it stopped at its cap, never steady
    dropped_passes: Optional[int] = None  # passes measured but left out: not clean, measured again
    outlier_batches: Optional[int] = None  # batches far from the side's median (watch.outliers)
    contended_batches: Optional[int] = None  # batches that waited for a CPU (watch.host)
    disturbed_passes: Optional[int] = None  # passes during which another process used the GPU
    compiled_passes: Optional[int] = None  # passes inside whose batches torch compiled or recorded a CUDA graph
    compilations: dict[str, int] = field(default_factory=dict)  # those compilations, by kind
    other_gpu_work: list[str] = field(default_factory=list)  # those processes: pid and their highest SM share
    host_wait_max: Optional[float] = None  # the largest share of a batch spent waiting for a CPU

    @classmethod
    def of_passes(cls, latencies_s: Sequence[float], **values: Any) -> "Side":
        """A side from its per-pass seconds per image: their median and their spread, (max - min) /
        median. A run's sides and the evaluator's are summarized by this one rule."""
        median = statistics.median(latencies_s)
        return cls(
            latency_s=median,
            latency_min_s=min(latencies_s),
            latency_max_s=max(latencies_s),
            latency_spread=(max(latencies_s) - min(latencies_s)) / median,
            images_per_s=1.0 / median,
            **values,
        )

    @classmethod
    def of(cls, measured: Measurement, compiled: bool, passes: Optional[Sequence[int]] = None) -> "Side":
        """The side over the ``passes`` its comparison uses (``measure.paired_passes``; default all)."""
        passes = range(measured.repeats) if passes is None else passes
        batches = [t for r in passes for t in measured.pass_batch_times_s(r)]
        checks = [measured.checks[r] for r in passes] if measured.checks else []
        waits = [w for c in checks for w in c.wait_shares if w is not None]
        return cls.of_passes(
            [measured.repeat_latencies_s[r] for r in passes],
            batch_time_median_s=statistics.median(batches),
            batch_time_min_s=min(batches),
            batch_time_max_s=max(batches),
            flops_per_image=measured.flops_per_image,
            peak_mem_gb=measured.peak_mem_gb,
            warmup_batches=measured.warmup_batches,
            warmup_inherited=measured.warmup_inherited,
            warmup_s=sum(measured.warmup_times_s),
            measured_s=measured.measured_s,
            flops_s=measured.flops_s,
            flops_inherited=measured.flops_inherited,
            flops_eager=measured.flops_eager,
            compile_s=compile_cost_s(measured) if compiled else None,
            warmup_stable=measured.warmup_stable,
            dropped_passes=measured.repeats - len(passes),
            outlier_batches=sum(len(c.outliers) for c in checks),
            contended_batches=sum(c.contended for c in checks),
            disturbed_passes=sum(bool(c.foreign) for c in checks),
            compiled_passes=sum(bool(c.compilations) for c in checks),
            compilations=dict(sum((Counter(c.compilations) for c in checks), Counter())),
            other_gpu_work=[str(f) for f in busiest([f for c in checks for f in c.foreign])],
            pass_latencies_s=measured.repeat_latencies_s,
            host_wait_max=max(waits) if waits else None,
        )

    def rated(self, peak_tflops: Optional[float]) -> "Side":
        """With its achieved TFLOP/s and, where the device's peak is known, its share of that peak."""
        if self.flops_per_image is None or not self.latency_s:
            return self
        tflops = self.flops_per_image / self.latency_s / 1e3
        return dataclasses.replace(self, tflops=tflops, peak_share=tflops / peak_tflops if peak_tflops else None)

    def causes(self) -> list[str]:
        """What disturbed this side's figures, in words; empty when nothing did. (A warm-up that never
        got steady is a finding of its own, ``warmup_stable``: the figures after it are measured alike.)"""
        found = []
        if self.outlier_batches:
            found.append(f"{self.outlier_batches} outlier batch(es)")
        if self.contended_batches:
            found.append(
                f"{self.contended_batches} batch(es) on a busy host (waited up to {self.host_wait_max:.0%} for a CPU)"
            )
        if self.disturbed_passes:
            found.append(f"{self.disturbed_passes} pass(es) beside other GPU work ({', '.join(self.other_gpu_work)})")
        if self.compiled_passes:
            found.append(
                f"{self.compiled_passes} pass(es) compiling in measured batches ({compiled_words(self.compilations)})"
            )
        return found


def compile_cost_s(measured: Measurement) -> float:
    """What compilation cost: it runs in the first (warm-up) calls, so the warm-up's time beyond as
    many batches at the measured median."""
    return max(0.0, sum(measured.warmup_times_s) - len(measured.warmup_times_s) * measured.batch_time_median_s)


@dataclass
class Row:
    """One run: what ran, where, and its two sides measured in one comparison.

    ``speedup`` = base latency / accelerated latency (the median of per-repeat ratios);
    ``flops_ratio`` = base FLOPs / accelerated FLOPs (the speedup the FLOPs alone would predict);
    ``clip_loss`` = (base CLIP - accelerated CLIP) / base CLIP; PSNR, SSIM and LPIPS compare each
    accelerated image with the baseline image of the same prompt (``accel_bench.metrics``; a metric
    the run's ``metrics`` list left out leaves its columns empty).
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
    speedup: Optional[float] = None
    speedup_min: Optional[float] = None  # the range of the per-repeat ratios
    speedup_max: Optional[float] = None
    flops_ratio: Optional[float] = None
    clip_loss: Optional[float] = None
    clip_model: Optional[str] = None
    clip_weights: Optional[str] = None
    psnr_db: Optional[float] = None
    ssim: Optional[float] = None
    ssim_loss: Optional[float] = None  # 1 - SSIM: what a budget on SSIM bounds
    lpips: Optional[float] = None  # mean LPIPS against the baseline's image for the same prompt and seed
    metric_weights: dict[str, str] = field(default_factory=dict)  # metric -> what scored it (metrics.Metric.weights)
    versions: dict[str, str] = field(default_factory=dict)
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
    repeats: Optional[int] = None  # passes over the prompt set, per side, that the figures use
    repeats_asked: Optional[int] = None  # the passes asked for: fewer clean ones after measuring again disturb
    interleaved: Optional[bool] = None  # baseline and accelerated passes alternated (baseline re-measured)
    baseline: Optional[str] = None  # what the speedup is over: eager, or compile:<mode> (the UNet, whole graph)
    scoring_s: Optional[float] = None  # seconds of this job's metrics (accel_bench.metrics) on its images
    pipeline_load_s: Optional[float] = None  # 0 when the process already had the pipeline
    baseline_cached: Optional[bool] = None  # reused a baseline measured earlier (this process or another job)
    # wall seconds since the process's previous job (its first: since the process started)
    job_s: Optional[float] = None
    search_stage: Optional[str] = None  # a search's job: screen (few prompts, one repeat) | full; empty otherwise
    isolation: Optional[str] = None  # other work on the GPU: checked | unchecked: <why> | cpu (watch.device)
    disturbed: Optional[str] = None  # what disturbed the figures, side by side; empty when nothing did
    run_dir: Optional[str] = None
    accelerated: Side = field(default_factory=Side)
    base: Side = field(default_factory=Side)
    # where a side compiles: torch.compile's settings from the environment (environment.compile_settings)
    compile_settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not one of {STATUSES}")

    def disturbance(self) -> Optional[str]:
        """The sides' causes in one readable line (``disturbed``), None for clean figures."""
        parts = [
            f"{label}: {'; '.join(side.causes())}"
            for label, side in (("baseline", self.base), (self.accel or "accelerated", self.accelerated))
            if side.causes()
        ]
        if self.repeats is not None and self.repeats_asked is not None and self.repeats < self.repeats_asked:
            parts.append(f"{self.repeats} of {self.repeats_asked} pass(es) clean after measuring again")
        return " | ".join(parts) or None

    def put(self, values: dict[str, Any]) -> None:
        """Set values by their flat (CSV) column names: ``base_x`` is the baseline side's ``x``."""
        for column, value in values.items():
            for name, prefix in sorted(_SIDE_PREFIXES.items(), key=lambda item: -len(item[1])):
                side = getattr(self, name)
                key = column[len(prefix) :]
                if column.startswith(prefix) and key in {f.name for f in dataclasses.fields(Side)}:
                    setattr(side, key, value)
                    break
            else:
                if column not in _FIELDS:
                    raise KeyError(f"{column} is no column of the row")
                setattr(self, column, value)

    def to_json(self) -> dict[str, Any]:
        """Nested: the sides under ``accelerated`` and ``base``."""
        return dataclasses.asdict(self)

    def to_csv(self) -> dict[str, str]:
        """Flat, for pandas: one column per value, the baseline side's prefixed ``base_``."""
        flat = self._flat()
        return {column: _csv_cell(flat[column]) for column in COLUMNS}

    def _flat(self) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Side):
                prefix = _SIDE_PREFIXES[f.name]
                flat.update((prefix + key, item) for key, item in dataclasses.asdict(value).items())
            else:
                flat[f.name] = value
        return flat

    @classmethod
    def from_csv(cls, cells: dict[str, str]) -> "Row":
        """A summary's row read back by the code that wrote it; columns it does not know are ignored,
        columns it misses (an older summary) keep their defaults."""
        sides = {
            name: Side(
                **{
                    f.name: _parse(cells.get(prefix + f.name, ""), f.type, prefix + f.name)
                    for f in dataclasses.fields(Side)
                }
            )
            for name, prefix in _SIDE_PREFIXES.items()
        }
        values = {
            f.name: _parse(cells[f.name], f.type, f.name)
            for f in dataclasses.fields(cls)
            if f.name in cells and f.name not in sides
        }
        return cls(**values, **sides)


_SIDE_PREFIXES = {"accelerated": "", "base": "base_"}
# The summary's first columns, in the order the benchmark's earlier scripts and their readers know.
CONTRACT = (
    "run_id timestamp status error pipeline weights scheduler steps batch_size num_images resolution accel accel_params seed "
    "device dtype latency_s base_latency_s speedup batch_time_median_s base_batch_time_median_s images_per_s flops_per_image "
    "base_flops_per_image flops_ratio peak_mem_gb clip_score base_clip_score clip_loss clip_model clip_weights psnr_db ssim versions"
).split()
COLUMNS = tuple(CONTRACT) + tuple(c for c in Row(run_id="", timestamp="", status="ok")._flat() if c not in CONTRACT)
_FIELDS = {f.name for f in dataclasses.fields(Row)}


class SummaryError(ValueError):
    """A summary file that does not read back: which line, which column, what it holds."""


def _parse(cell: str, annotation: Any, column: str) -> Any:
    """A CSV cell back to its field's type (annotations are strings here: ``from __future__``)."""
    if cell == "":
        return {} if annotation.startswith("dict") else [] if annotation.startswith("list") else None
    try:
        if annotation.startswith(("dict", "list")):
            return json.loads(cell)
        if "bool" in annotation:
            return {"True": True, "False": False}[cell]
        if "int" in annotation:
            return int(cell)
        if "float" in annotation:
            return float(cell)
    except (ValueError, KeyError):
        kind = (
            "JSON"
            if annotation.startswith(("dict", "list"))
            else "True or False"
            if "bool" in annotation
            else "an integer"
            if "int" in annotation
            else "a number"
        )
        raise ValueError(f"{column}={cell!r} is not {kind}") from None
    return cell


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(value)


def write_result(run_dir: Path, row: Row, config: dict[str, Any]) -> Path:
    """``<run dir>/result.json``: the row and the resolved config that produced it."""
    path = Path(run_dir) / RESULT_FILE
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


def read_rows(path: Path) -> list[Row]:
    """Every row of a summary, typed (an empty list for a file that does not exist yet); SummaryError
    names the first cell that does not read back (a summary edited by hand or by another tool)."""
    rows = []
    for line, cells in enumerate(_read(Path(path))[1], start=2):
        try:
            rows.append(Row.from_csv(cells))
        except (ValueError, TypeError) as error:
            raise SummaryError(f"{path} line {line} (run_id {cells.get('run_id')!r}): {error}") from None
    return rows


def _text_columns() -> list[str]:
    """The summary's columns that hold text (ids, names, messages), flat as the CSV has them."""
    plain = {f.name: f.type for f in dataclasses.fields(Row) if f.name not in _SIDE_PREFIXES}
    sides = {prefix + f.name: f.type for prefix in _SIDE_PREFIXES.values() for f in dataclasses.fields(Side)}
    return sorted(c for c, t in {**plain, **sides}.items() if "str" in t and not t.startswith(("dict", "list")))


def read_frame(path: Path) -> Any:
    """A summary as a pandas DataFrame, its text columns read as text: pandas alone would read a run id
    such as ``13e885097810`` as a number (infinity)."""
    import pandas as pd

    return pd.read_csv(path, dtype={column: str for column in _text_columns()})


def read_result(run_dir: Path) -> Optional[Row]:
    """The row a run wrote as ``<run dir>/result.json``, or None where it wrote none."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        return None
    values = json.loads(path.read_text())["row"]
    sides = {name: Side(**values.pop(name, {})) for name in _SIDE_PREFIXES}
    return Row(**{k: v for k, v in values.items() if k in _FIELDS}, **sides)


def append_summary(path: Path, row: Row) -> None:
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


def upsert_summary(path: Path, row: Row) -> int:
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
