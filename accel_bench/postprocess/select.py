"""Best parameters per (pipeline, scheduler, steps, batch size, quality budget), and the gaps."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .records import Measured, RowStatus

RANDOM_NOTE = "measured with random weights: speed is real, CLIP loss and PSNR are not quality measures"


@dataclass(frozen=True)
class Entry:
    """The ok row with the highest speedup whose CLIP loss is within the budget."""

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
    quality_budget: float
    accel: str
    methods: list[str]
    params: dict[str, Any]
    speedup: float
    clip_loss: float
    psnr_db: Optional[float]
    latency_s: float
    base_latency_s: float
    weights: str
    run_id: str
    device_name: str

    def to_json(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        if self.weights == "random":
            record["note"] = RANDOM_NOTE
        return record


@dataclass(frozen=True)
class Gap:
    pipeline: str
    scheduler: str
    steps: int
    quality_budget: float
    reason: str


def candidates(measured: Sequence[Measured], include_random: bool) -> list[Measured]:
    """Rows that may be selected: accelerated, faster than their baseline, real weights unless admitted."""
    return [m for m in measured if m.accel != "none" and m.speedup > 1 and (include_random or m.weights == "pretrained")]


def select(measured: Sequence[Measured], budgets: Sequence[float], include_random: bool) -> list[Entry]:
    groups: dict[tuple, list[Measured]] = defaultdict(list)
    for m in candidates(measured, include_random):
        groups[(m.pipeline, m.scheduler, m.steps, m.batch_size)].append(m)
    entries = []
    for key in sorted(groups):
        for budget in sorted(budgets):
            within = [m for m in groups[key] if m.clip_loss <= budget]
            if not within:
                continue
            best = min(within, key=lambda m: (-m.speedup, m.clip_loss, m.sort_key))
            fields = {f.name: getattr(best, f.name) for f in dataclasses.fields(Entry) if hasattr(best, f.name)}
            entries.append(Entry(quality_budget=budget, **fields))
    return entries


def gaps(
    grid: Sequence[tuple[str, str, int]],
    budgets: Sequence[float],
    measured: Sequence[Measured],
    statuses: Sequence[RowStatus],
    entries: Sequence[Entry],
    include_random: bool,
) -> list[Gap]:
    """Every grid combination and budget without an entry, with the reason."""
    covered = {(e.pipeline, e.scheduler, e.steps, e.quality_budget) for e in entries}
    found = []
    for combination in grid:
        for budget in sorted(budgets):
            if (*combination, budget) not in covered:
                found.append(Gap(*combination, budget, _reason(combination, budget, measured, statuses, include_random)))
    return found


def _reason(combination, budget, measured, statuses, include_random) -> str:
    rows = [s for s in statuses if (s.pipeline, s.scheduler, s.steps) == combination]
    if not rows:
        return "no rows in the sweeps"
    counts = Counter(s.status for s in rows)
    if not counts["ok"]:
        return "no ok rows (" + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ")"
    ok = [m for m in measured if m.combination == combination]
    if not include_random and all(m.weights == "random" for m in ok):
        return "only rows measured with random weights (include_random=true admits them)"
    faster = [m for m in candidates(ok, include_random)]
    if not faster:
        return "no accelerated row faster than its baseline"
    best_loss = min(m.clip_loss for m in faster)
    return f"no accelerated row within the budget (lowest CLIP loss among faster rows: {best_loss:.4f})"
