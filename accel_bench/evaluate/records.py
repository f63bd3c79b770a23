"""A measured side against its baseline -> the record a file gets (``FileRecord``): numbers, verdict,
reason."""

from __future__ import annotations

import statistics
from typing import Optional, Sequence

from ..metrics import METRICS, Metric
from ..record import Side
from .bar import Bar, Reference, judge
from .file_record import FileRecord
from .session import SideResult, disturbance, ratios, verdict_passes, watched_pairs
from .verdicts import REASONS, image_findings, median_interval, paired_images, summarize_psnr, watched_verdict

NO_SPEEDUP = "a target of 1x or less asks for no speedup: there is no cut to compare with"


def needs_reference(base: SideResult, side: SideResult, targets: tuple[float, ...]) -> Optional[tuple[float, float]]:
    """(the low end of its speedup, its median) for a file a fewer-steps reference must be measured
    for: one with a task, measured, and not too slow for every target (a failed file needs no bar)."""
    targets = tuple(t for t in targets if t > 1)  # a target of 1x or less has no cut to compare with
    if not targets or base.failure is not None or side.failure is not None or not side.pass_latencies_s:
        return None
    kept, clean = watched_pairs(base, side)
    if all(
        watched_verdict(ratios(base, side, clean), ratios(base, side, kept), t, side.passes_asked)[0] == "failed"
        for t in targets
    ):
        return None
    found = ratios(base, side, verdict_passes(base, side))
    return median_interval(found)[0], statistics.median(found)


def compare(
    base: SideResult,
    side: SideResult,
    scorers: Sequence[Metric],
    target: Optional[float],
    budget: Optional[float],
    min_psnr_db: float,
    budget_metric: str = "clip",
    reference: Optional[Reference] = None,
    margin_db: float = 0.0,
    no_reference: str = "",
) -> FileRecord:
    """The record of ``side`` measured against ``base`` in one session. A file with a target is judged
    against ``reference`` (the baseline cut to its speed) when one was measured, else against the floor
    alone, ``no_reference`` saying why."""
    record = FileRecord.unmeasured(side, target, budget, budget_metric, min_psnr_db)
    reasons: list[str] = []
    if base.failure is not None:
        reasons.append("baseline_failed")
        record.error = f"the baseline failed ({base.failure.reason}): {base.failure.message}"
    elif side.failure is not None:
        reasons.append(side.failure.reason)
        record.error = side.failure.message
    else:
        found = image_findings(side.measured, base.measured, min_psnr_db)
        record.psnr_db, record.psnr_min_db = summarize_psnr(found.psnr_db)
        record.images_checked, record.images_unfaithful = found.checked, found.unfaithful
        if found.wrong is not None:
            reasons.append("wrong_images")
            record.error = f"returned {found.wrong}"
        if found.unfaithful:
            reasons.append("unfaithful")
            record.error = record.error or (
                f"{found.unfaithful} of {found.checked} images below {min_psnr_db:g} dB PSNR against the "
                f"baseline's for the same prompt and seed (lowest {record.psnr_min_db:.1f} dB)"
            )
        kept, clean = watched_pairs(base, side)
        passes = verdict_passes(base, side)
        found_ratios = ratios(base, side, passes)
        # a side summarized as the run summarizes its sides, over the passes its verdict uses
        summary = Side.of_passes([side.pass_latencies_s[r] for r in passes])
        low, high = median_interval(found_ratios)
        record.status = "ok" if found.wrong is None else "failed"
        record.speedups, record.repeats = found_ratios, len(found_ratios)
        record.speedup = statistics.median(found_ratios)
        record.speedup_low, record.speedup_high = low, high
        record.speedup_min, record.speedup_max = min(found_ratios), max(found_ratios)
        record.latency_s, record.latency_spread = summary.latency_s, summary.latency_spread
        record.base_latency_s = Side.of_passes([base.pass_latencies_s[r] for r in passes]).latency_s
        record.clean_passes = len(clean)
        record.disturbed = " | ".join(disturbance("baseline", base) + disturbance("this file", side)) or None
        if found.wrong is None and found.checked:
            base_images, images, prompts = paired_images(side.measured, base.measured)
            for metric in scorers:
                if metric.name != "psnr":  # PSNR is the image checks' own, per image
                    scored = metric.score(base_images, images, prompts, None)
                    record.metrics.update(scored.values)
                    record.metric_weights[metric.name] = scored.weights
        if found.wrong is None and budget is not None:
            cls = METRICS[budget_metric]
            value = record.metrics.get(cls.budget_column)
            if value is None or value > budget:
                reasons.append("over_budget")
                record.error = record.error or (
                    f"{cls.budget_label} {'not measured' if value is None else format(value, '.4f')} over the budget {budget:g}"
                )
        if target is not None and found.wrong is None:
            # the file's speed chose the reference's step count: too few clean passes put that count in doubt
            own_doubt = (
                None
                if len(clean) >= max(1, side.passes_asked)
                else f"this file's speed, {len(clean)} of {side.passes_asked} pass pairs clean ({record.disturbed})"
            )
            bar = (
                judge(side.measured, base.measured, reference, margin_db, min_psnr_db, own_doubt)
                if reference is not None and target > 1  # a ground truth shared by tasks: only theirs above 1x
                else Bar("floor", min_psnr_db, note=NO_SPEEDUP if target <= 1 else no_reference or None)
            )
            record.bar = bar
            if not bar.cleared:
                reasons.append("no_better_than_fewer_steps")
                record.error = record.error or bar.explain()
                if bar.doubt:
                    reasons.append("disturbed")
        verdict, disturbed = (
            watched_verdict(ratios(base, side, clean), ratios(base, side, kept), target, side.passes_asked)
            if target is not None
            else (None, False)
        )
        if disturbed:
            record.verdict = "inconclusive"
            reasons.append("disturbed")
            record.error = record.error or (
                f"the disturbance decides the verdict ({len(clean)} pass pairs clean on both sides, "
                f"{side.passes_asked} needed): {record.disturbed}"
            )
        elif target is not None:
            record.verdict = verdict
            if verdict != "passed":
                reasons.append("too_slow" if verdict == "failed" else "inconclusive")
                record.error = record.error or (
                    f"speedup {record.speedup:.2f}x (interval {low:.2f}-{high:.2f} over {len(found_ratios)} passes) "
                    + ("below" if verdict == "failed" else "around")
                    + f" the target {target:g}x"
                )
    record.reasons = sorted(set(reasons), key=REASONS.index)
    record.passed = None if target is None and budget is None else not record.reasons
    return record
