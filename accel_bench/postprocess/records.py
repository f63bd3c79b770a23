"""What post-processing selects from: the ok rows of sweeps, read by the row's own code."""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from .. import accelerators, metrics
from ..errors import ConfigError
from ..record import Row, SummaryError, read_rows
from ..sweep.layout import SweepLayout


@dataclass(frozen=True)
class Measured:
    """One ok row of a sweep: a configuration and what it measured."""

    pipeline: str
    pipeline_label: str
    family: str
    model_id: Optional[str]
    scheduler: str
    scheduler_class: str
    scheduler_label: str
    scheduler_kwargs: dict[str, Any]
    steps: int
    resolution: int
    guidance_scale: float
    batch_size: int
    accel: str
    methods: list[str]
    params: dict[str, Any]
    speedup: float
    clip_loss: Optional[float]
    psnr_db: Optional[float]
    lpips: Optional[float]
    latency_s: float
    base_latency_s: float
    weights: str
    clip_weights: str
    run_id: str
    device_name: str
    run_dir: str  # holds result.json with the full config: what a confirmation re-runs
    disturbed: Optional[str]  # what disturbed its figures (left out unless include_disturbed=true)
    search_stage: Optional[str] = None  # a search's screening row (few prompts) is plotted, never selected
    loss: Optional[float] = None  # the budget metric's value (budget_metric): larger is worse; None: not measured

    @property
    def combination(self) -> tuple[str, str, int]:
        return (self.pipeline, self.scheduler, self.steps)

    @property
    def sort_key(self) -> tuple:
        """A total order: every tie in a selection is broken the same way."""
        return (self.accel, json.dumps(self.params, sort_keys=True), self.run_id)


# Measured's values that the row keeps under other names or in its sides; every other has the row's name.
_FROM_ROW = {
    "methods": lambda row: row.accel_methods,
    "params": lambda row: row.accel_params,
    "latency_s": lambda row: row.accelerated.latency_s,
    "base_latency_s": lambda row: row.base.latency_s,
}
# a summary written before rows carried ``disturbed`` reads as undisturbed
REQUIRED = tuple(
    sorted(
        {
            {"methods": "accel_methods", "params": "accel_params"}.get(f.name, f.name)
            for f in dataclasses.fields(Measured)
            if f.name not in ("disturbed", "lpips", "loss", "search_stage")  # older summaries have none of these
        }
        | {"status"}
    )
)


@dataclass(frozen=True)
class RowStatus:
    """Any row, ok or not, for the coverage report."""

    pipeline: str
    scheduler: str
    steps: int
    status: str
    weights: str
    disturbed: bool = False


def _measured(row: Row, budget_metric: str) -> Measured:
    return Measured(
        **{
            f.name: _FROM_ROW[f.name](row) if f.name in _FROM_ROW else getattr(row, f.name)
            for f in dataclasses.fields(Measured)
            if f.name != "loss"
        },
        loss=getattr(row, metrics.budget_column(budget_metric)),
    )


def read_summaries(sweep_dirs: Iterable[Path], budget_metric: str = "clip") -> tuple[list[Measured], list[RowStatus]]:
    """The ok rows of every sweep's summary, each with its ``budget_metric`` value, and the status of every row."""
    measured, statuses = [], []
    for sweep_dir in sorted(Path(d) for d in sweep_dirs):
        path = SweepLayout(sweep_dir).summary
        with path.open(newline="") as f:
            columns = next(csv.reader(f), [])
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ConfigError(
                "sweep_dir",
                str(sweep_dir),
                f"a sweep whose summary has the columns {', '.join(missing)} (written by an older accel_bench? re-run the sweep)",
            )
        try:
            rows = read_rows(path)
        except SummaryError as error:
            raise ConfigError("sweep_dir", str(sweep_dir), f"a sweep whose summary reads back: {error}") from None
        for row in rows:
            if row.baseline not in (None, "eager"):
                continue  # a speedup over a compiled baseline: the tasks' baseline code is the eager pipeline
            statuses.append(
                RowStatus(row.pipeline, row.scheduler, row.steps, row.status, row.weights, bool(row.disturbed))
            )
            if row.status != "ok" or accelerators.no_code(row.accel_methods, row.accel_params):
                continue  # a speed that generated code would not reproduce makes no task
            measured.append(_measured(row, budget_metric))
    return measured, statuses
