"""Best parameters per (pipeline, scheduler, steps, batch size, quality budget), and the gaps."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .records import Measured, RowStatus

RANDOM_NOTE = "measured with random weights: speed is real, CLIP loss, LPIPS and PSNR are not quality measures"


@dataclass(frozen=True)
class Entry(Measured):
    """The ok row with the highest speedup whose ``budget_metric`` value (``loss``) is within ``quality_budget``."""

    quality_budget: float = 0.0
    budget_metric: str = "clip"
    # with confirm=true: the winner re-measured interleaved against its baseline
    confirmed_speedup: Optional[float] = None
    confirmed_speedup_min: Optional[float] = None
    confirmed_speedup_max: Optional[float] = None
    confirmed_loss: Optional[float] = None  # the budget metric's value, re-measured
    confirmed_disturbed: Optional[str] = None  # what disturbed the re-measuring run: its figures decide nothing
    reranked: Optional[bool] = None  # the sweep's first choice did not hold up
    # with quality_prompts: FID over many prompts (postprocess.quality)
    fid: Optional[float] = None  # against the baseline's images for the same prompts and seeds
    fid_reference: Optional[float] = None  # against the user's reference images (fid_reference_dir)
    base_fid_reference: Optional[float] = None  # the baseline's, against the same reference images
    quality_lpips: Optional[float] = None  # LPIPS against the baseline over the same many prompts
    fid_images: Optional[int] = None
    fid_weights: Optional[str] = None  # what extracted the features (".../random": measures nothing)
    quality_s: Optional[float] = None  # seconds of the quality stage for this configuration

    @property
    def target_basis(self) -> float:
        """The speedup tasks are made from: the confirmed one when there is one, measured undisturbed."""
        return self.speedup if self.confirmed_speedup is None or self.confirmed_disturbed else self.confirmed_speedup

    def to_json(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        del record["run_dir"]  # where the sweep ran is no property of the result
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
    """Rows that may be selected: accelerated, faster than their baseline, real weights unless admitted,
    with the budget metric measured, and not a search's screening row."""
    return [
        m
        for m in measured
        if m.accel != "none"
        and m.speedup > 1
        and (include_random or m.weights == "pretrained")
        and m.loss is not None
        and m.search_stage != "screen"
    ]


def left_out(measured: Sequence[Measured], include_random: bool, include_disturbed: bool) -> dict[str, list[Measured]]:
    """The ok rows that cannot be selected, by the first reason that applies: no row leaves quietly."""
    reasons: dict[str, list[Measured]] = defaultdict(list)
    for m in measured:
        if m.disturbed and not include_disturbed:
            reasons["disturbed (include_disturbed=true admits them)"].append(m)
        elif m.accel == "none":
            reasons["the baseline measured against itself (a control)"].append(m)
        elif m.speedup <= 1:
            reasons["no faster than their baseline"].append(m)
        elif not include_random and m.weights != "pretrained":
            reasons["random weights (include_random=true admits them)"].append(m)
        elif m.search_stage == "screen":
            reasons["screened by a search (few prompts, one repeat): its full measurement is a row of its own"].append(
                m
            )
        elif m.loss is None:
            reasons["the budget metric not measured (not in the sweep's metrics list)"].append(m)
    return dict(sorted(reasons.items()))


@dataclass(frozen=True)
class Confirmation:
    speedup: float  # median of the interleaved pairs' ratios
    speedup_min: float
    speedup_max: float
    loss: Optional[float]  # the budget metric's value
    disturbed: Optional[str] = None  # what disturbed the re-measuring run's figures (the row's ``disturbed``)


def ranked_within(
    measured: Sequence[Measured], budgets: Sequence[float], include_random: bool
) -> dict[tuple, list[Measured]]:
    """Per (pipeline, scheduler, steps, batch size, budget): the qualifying rows, best first."""
    groups: dict[tuple, list[Measured]] = defaultdict(list)
    for m in candidates(measured, include_random):
        groups[(m.pipeline, m.scheduler, m.steps, m.batch_size)].append(m)
    ranked = {}
    for key in sorted(groups):
        for budget in sorted(budgets):
            within = sorted(
                (m for m in groups[key] if m.loss <= budget), key=lambda m: (-m.speedup, m.loss, m.sort_key)
            )
            if within:
                ranked[(*key, budget)] = within
    return ranked


def _entry(m: Measured, budget: float, budget_metric: str, **confirmed: Any) -> Entry:
    return Entry(
        **{f.name: getattr(m, f.name) for f in dataclasses.fields(Measured)},
        quality_budget=budget,
        budget_metric=budget_metric,
        **confirmed,
    )


def select(
    measured: Sequence[Measured], budgets: Sequence[float], include_random: bool, budget_metric: str = "clip"
) -> list[Entry]:
    return [
        _entry(rows[0], key[-1], budget_metric)
        for key, rows in ranked_within(measured, budgets, include_random).items()
    ]


def select_confirmed(
    measured: Sequence[Measured],
    budgets: Sequence[float],
    include_random: bool,
    confirm: Callable[[Measured], Confirmation],
    budget_metric: str = "clip",
) -> tuple[list[Entry], list[str]]:
    """Confirm each winner by re-measuring it; while the best confirmed speedup is below the next
    candidate's sweep speedup, confirm that one too. A confirmation measured while disturbed neither
    confirms nor refutes: its row keeps its sweep speedup (the entry says what disturbed it). Returns
    the entries and the notes: what was re-ranked, which confirmations were disturbed."""
    confirmed: dict[str, Confirmation] = {}
    entries, notes = [], []

    def held(m: Measured) -> float:
        c = confirmed[m.run_id]
        return m.speedup if c.disturbed else c.speedup

    for key, rows in ranked_within(measured, budgets, include_random).items():
        tried: list[Measured] = []
        for index, row in enumerate(rows):
            if row.run_id not in confirmed:
                confirmed[row.run_id] = confirm(row)
            tried.append(row)
            best = max(tried, key=lambda m: (held(m), -tried.index(m)))
            following = rows[index + 1] if index + 1 < len(rows) else None
            if following is None or held(best) >= following.speedup:
                break
        for m in tried:
            if confirmed[m.run_id].disturbed:
                notes.append(
                    f"confirmation disturbed for {key[0]} {key[1]} {key[2]} steps, batch {key[3]}, budget {key[4]:g}: "
                    f"{m.accel} {m.params} re-measured {confirmed[m.run_id].speedup:.2f}x while disturbed "
                    f"({confirmed[m.run_id].disturbed}); its swept {m.speedup:.2f}x stands"
                )
        c = confirmed[best.run_id]
        entries.append(
            _entry(
                best,
                key[-1],
                budget_metric,
                confirmed_speedup=c.speedup,
                confirmed_speedup_min=c.speedup_min,
                confirmed_speedup_max=c.speedup_max,
                confirmed_loss=c.loss,
                confirmed_disturbed=c.disturbed,
                reranked=best is not rows[0],
            )
        )
        if best is not rows[0]:
            first = rows[0]
            notes.append(
                f"re-ranked {key[0]} {key[1]} {key[2]} steps, batch {key[3]}, budget {key[4]:g}: {first.accel} {first.params} "
                f"swept {first.speedup:.2f}x, confirmed {confirmed[first.run_id].speedup:.2f}x; now {best.accel} {best.params} "
                f"swept {best.speedup:.2f}x, confirmed {c.speedup:.2f}x"
            )
    return entries, notes


def gaps(
    grid: Sequence[tuple[str, str, int]],
    budgets: Sequence[float],
    measured: Sequence[Measured],
    statuses: Sequence[RowStatus],
    entries: Sequence[Entry],
    include_random: bool,
    budget_label: str = "CLIP loss",
) -> list[Gap]:
    """Every grid combination and budget without an entry, with the reason."""
    covered = {(e.pipeline, e.scheduler, e.steps, e.quality_budget) for e in entries}
    found = []
    for combination in grid:
        for budget in sorted(budgets):
            if (*combination, budget) not in covered:
                found.append(
                    Gap(
                        *combination,
                        budget,
                        _reason(combination, budget, measured, statuses, include_random, budget_label),
                    )
                )
    return found


def _reason(combination, budget, measured, statuses, include_random, budget_label) -> str:
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
    disturbed = sum(s.disturbed for s in rows)
    if disturbed and not faster:
        return f"no accelerated row faster than its baseline among the undisturbed; {disturbed} disturbed row(s) left out (include_disturbed=true admits them)"
    if not faster and any(m.loss is None and m.accel != "none" for m in ok):
        return f"{budget_label} not measured by the accelerated rows (the sweep's metrics list left it out)"
    if not faster:
        return "no accelerated row faster than its baseline"
    best_loss = min(m.loss for m in faster)
    return f"no accelerated row within the budget (lowest {budget_label} among faster rows: {best_loss:.4f})"
