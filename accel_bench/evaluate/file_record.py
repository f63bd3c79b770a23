"""The evaluator's records, typed: what the watches saw of a side (``Watched``), a baseline file's
record (``BaselineRecord``), a judged file's (``FileRecord``, the body of ``metrics.json``) and a task's
line of ``evaluation.csv`` (``EvaluationRow``). Each is built in one place and written by its own
``to_json``; the metric columns are the plug-ins' (``accel_bench.metrics``), flat beside the rest as
a run's row has them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from ..metrics import METRICS
from ..watch.device import busiest
from .bar import Bar
from .manifest import ManifestTask
from .session import SideResult


@dataclass
class Watched:
    """What the watches saw over all of a side's measured passes, and the work it left on the GPU."""

    isolation: str
    passes_measured: int
    passes_not_clean: int
    outlier_batches: int
    contended_batches: int
    disturbed_passes: int  # passes with other processes' work on the GPU
    other_gpu_work: list[str]
    leftover_gpu_s: float  # queued work waited out after its passes, charged to it
    warmup_stable: Optional[bool]

    @classmethod
    def of(cls, side: SideResult) -> "Watched":
        checks = side.checks
        return cls(
            isolation=side.isolation,
            passes_measured=len(checks),
            passes_not_clean=sum(not c.clean for c in checks),
            outlier_batches=sum(len(c.outliers) for c in checks),
            contended_batches=sum(c.contended for c in checks),
            disturbed_passes=sum(bool(c.foreign) for c in checks),
            other_gpu_work=[str(f) for f in busiest([f for c in checks for f in c.foreign])],
            leftover_gpu_s=sum(c.leftover_s for c in checks),
            warmup_stable=side.warmup_stable,
        )


@dataclass
class BaselineRecord:
    """The baseline file of a session: whether it ran, its own cost, what the watches saw."""

    path: str
    status: str
    error: Optional[str]
    round_trip_s: Optional[float]
    batch_time_s: Optional[float]
    watched: Watched

    @classmethod
    def of(cls, base: SideResult) -> "BaselineRecord":
        return cls(
            path=str(base.spec.path),
            status="failed" if base.failure else "ok",
            error=base.failure.message if base.failure else None,
            round_trip_s=base.round_trip_s,
            batch_time_s=base.batch_time_s,
            watched=Watched.of(base),
        )

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        watched = values.pop("watched")
        return {**values, **watched}


def _metric_columns() -> dict[str, Optional[float]]:
    """The plug-ins' columns the record does not own (PSNR's ``psnr_db`` is the image checks')."""
    own = {f.name for f in dataclasses.fields(FileRecord)}
    return {column: None for cls in METRICS.values() for column in cls.columns if column not in own}


@dataclass
class FileRecord:
    """One file measured against its baseline in one session, and how it was judged. Starts as a file
    that failed before any measurement; ``records.compare`` fills in what was measured."""

    path: str
    min_psnr_db: float
    target_speedup: Optional[float]
    quality_budget: Optional[float]
    budget_metric: Optional[str]  # only where a budget is set
    warmup_batches: int
    batch_time_s: Optional[float]
    round_trip_s: Optional[float]
    peak_rss_gb: float
    watched: Watched
    status: str = "failed"
    verdict: Optional[str] = None  # passed | failed | inconclusive, where a target is set
    passed: Optional[bool] = False  # None: nothing asked of the file (no target, no budget)
    reasons: list[str] = field(default_factory=list)  # in verdicts.REASONS order
    error: Optional[str] = None
    speedup: Optional[float] = None
    speedup_low: Optional[float] = None
    speedup_high: Optional[float] = None
    speedup_min: Optional[float] = None
    speedup_max: Optional[float] = None
    speedups: list[float] = field(default_factory=list)
    repeats: Optional[int] = None
    latency_s: Optional[float] = None
    base_latency_s: Optional[float] = None
    latency_spread: Optional[float] = None
    clean_passes: Optional[int] = None  # pairs of passes clean on both sides: the verdict's passes
    disturbed: Optional[str] = None  # what made passes not clean, per side
    metrics: dict[str, Optional[float]] = field(default_factory=_metric_columns)  # the metrics' columns
    metric_weights: dict[str, str] = field(default_factory=dict)  # metric -> what scored it
    psnr_db: Optional[float] = None  # the median of the per-image checks against the floor
    psnr_min_db: Optional[float] = None
    images_checked: int = 0
    images_unfaithful: int = 0
    bar: Optional[Bar] = None  # what fidelity was judged against: the floor, or the baseline cut to the same speed

    @classmethod
    def unmeasured(
        cls, side: SideResult, target: Optional[float], budget: Optional[float], budget_metric: str, min_psnr_db: float
    ) -> "FileRecord":
        return cls(
            path=str(side.spec.path),
            min_psnr_db=min_psnr_db,
            target_speedup=target,
            quality_budget=budget,
            budget_metric=budget_metric if budget is not None else None,
            warmup_batches=side.warmup_batches,
            batch_time_s=side.batch_time_s,
            round_trip_s=side.round_trip_s,
            peak_rss_gb=side.peak_rss_gb,
            watched=Watched.of(side),
        )

    @property
    def reason(self) -> Optional[str]:
        """The first of ``reasons``: the one a table shows."""
        return self.reasons[0] if self.reasons else None

    @property
    def round_trip_share(self) -> Optional[float]:
        """A batch's transfer as a share of the batch: the harness's own cost."""
        return self.round_trip_s / self.batch_time_s if self.round_trip_s and self.batch_time_s else None

    def to_json(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        watched, metrics = values.pop("watched"), values.pop("metrics")
        return {
            **values,
            "reason": self.reason,
            "round_trip_share": self.round_trip_share,
            "bar": dataclasses.asdict(self.bar) if self.bar is not None else None,
            **metrics,
            **dataclasses.asdict(watched),
        }


@dataclass
class EvaluationRow:
    """A task's line of ``evaluation.csv``: its candidate's record beside its ground truth's, the
    columns in this order."""

    prompt_id: str
    task_key: str
    difficulty: Any
    target_speedup: Optional[float]
    quality_budget: Optional[float]
    budget_metric: str
    status: str
    verdict: Optional[str]
    passed: Optional[bool]
    reason: Optional[str]
    speedup: Optional[float]
    speedup_low: Optional[float]
    speedup_high: Optional[float]
    clip_loss: Optional[float]
    lpips: Optional[float]
    psnr_min_db: Optional[float]
    bar: Optional[str]
    bar_psnr_db: Optional[float]
    bar_required_psnr_db: Optional[float]
    bar_reference_steps: Optional[int]
    bar_doubt: Optional[str]
    gt_status: str
    gt_speedup: Optional[float]
    gt_clip_loss: Optional[float]
    gt_passed: Optional[bool]
    gt_reason: Optional[str]
    error: Optional[str]
    model_weights: str
    sandbox: str

    @classmethod
    def of(
        cls, entry: ManifestTask, candidate: FileRecord, gt: FileRecord, weights: str, sandbox: str
    ) -> "EvaluationRow":
        bar = candidate.bar
        return cls(
            prompt_id=entry.prompt_id,
            task_key=entry.task_key,
            difficulty=entry.difficulty,
            target_speedup=entry.target_speedup,
            quality_budget=entry.quality_budget,
            budget_metric=entry.budget_metric,
            status=candidate.status,
            verdict=candidate.verdict,
            passed=candidate.passed,
            reason=candidate.reason,
            speedup=candidate.speedup,
            speedup_low=candidate.speedup_low,
            speedup_high=candidate.speedup_high,
            clip_loss=candidate.metrics["clip_loss"],
            lpips=candidate.metrics["lpips"],
            psnr_min_db=candidate.psnr_min_db,
            bar=bar.kind if bar else None,
            bar_psnr_db=bar.psnr_db if bar else None,
            bar_required_psnr_db=bar.required_psnr_db if bar else None,
            bar_reference_steps=bar.reference_steps if bar else None,
            bar_doubt=bar.doubt if bar else None,
            gt_status=gt.status,
            gt_speedup=gt.speedup,
            gt_clip_loss=gt.metrics["clip_loss"],
            gt_passed=gt.passed,
            gt_reason=gt.reason,
            error=candidate.error,
            model_weights=weights,
            sandbox=sandbox,
        )

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
