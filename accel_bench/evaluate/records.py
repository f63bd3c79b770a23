"""A measured side against its baseline -> the record a file gets: numbers, verdict, reason."""

from __future__ import annotations

import statistics
from typing import Any, Optional

import numpy as np

from ..measure import pass_speedups
from ..record import Side
from .session import SideResult
from .verdicts import REASONS, image_findings, median_interval, speed_verdict, summarize_psnr


def clip_scores(scorer: Any, result: SideResult) -> np.ndarray:
    images = np.concatenate([e.images for e in result.measured]).astype(np.float32) / 255
    return scorer.scores(images, [p for e in result.measured for p in e.prompts])


def _empty(side: SideResult, target: Optional[float], budget: Optional[float], min_psnr_db: float) -> dict[str, Any]:
    return {
        "path": str(side.spec.path),
        "status": "failed",
        "verdict": None,
        "passed": False,
        "reason": None,
        "reasons": [],
        "error": None,
        "speedup": None,
        "speedup_low": None,
        "speedup_high": None,
        "speedup_min": None,
        "speedup_max": None,
        "speedups": [],
        "repeats": None,
        "latency_s": None,
        "base_latency_s": None,
        "latency_spread": None,
        "clip_score": None,
        "base_clip_score": None,
        "clip_loss": None,
        "psnr_db": None,
        "psnr_min_db": None,
        "images_checked": 0,
        "images_unfaithful": 0,
        "min_psnr_db": min_psnr_db,
        "target_speedup": target,
        "quality_budget": budget,
        "warmup_batches": side.warmup_batches,
        "batch_time_s": side.batch_time_s,
        "round_trip_s": side.round_trip_s,
        "round_trip_share": side.round_trip_s / side.batch_time_s if side.round_trip_s and side.batch_time_s else None,
        "peak_rss_gb": side.peak_rss_gb,
    }


def compare(
    base: SideResult,
    side: SideResult,
    base_scores: Optional[np.ndarray],
    scorer: Any,
    target: Optional[float],
    budget: Optional[float],
    min_psnr_db: float,
) -> dict[str, Any]:
    """The record of ``side`` measured against ``base`` in one session."""
    record = _empty(side, target, budget, min_psnr_db)
    reasons: list[str] = []
    if base.failure is not None:
        reasons.append("baseline_failed")
        record["error"] = f"the baseline failed ({base.failure.reason}): {base.failure.message}"
    elif side.failure is not None:
        reasons.append(side.failure.reason)
        record["error"] = side.failure.message
    else:
        found = image_findings(side.measured, base.measured, min_psnr_db)
        record["psnr_db"], record["psnr_min_db"] = summarize_psnr(found.psnr_db)
        record.update(images_checked=found.checked, images_unfaithful=found.unfaithful)
        if found.wrong is not None:
            reasons.append("wrong_images")
            record["error"] = f"returned {found.wrong}"
        if found.unfaithful:
            reasons.append("unfaithful")
            record["error"] = record["error"] or (
                f"{found.unfaithful} of {found.checked} images below {min_psnr_db:g} dB PSNR against the "
                f"baseline's for the same prompt and seed (lowest {record['psnr_min_db']:.1f} dB)"
            )
        ratios = pass_speedups(base.pass_latencies_s, side.pass_latencies_s)
        summary = Side.of_passes(side.pass_latencies_s)  # a side summarized as the run summarizes its sides
        low, high = median_interval(ratios)
        record.update(
            status="ok" if found.wrong is None else "failed",
            speedups=ratios,
            repeats=len(ratios),
            speedup=statistics.median(ratios),
            speedup_low=low,
            speedup_high=high,
            speedup_min=min(ratios),
            speedup_max=max(ratios),
            latency_s=summary.latency_s,
            base_latency_s=Side.of_passes(base.pass_latencies_s).latency_s,
            latency_spread=summary.latency_spread,
        )
        if found.wrong is None and base_scores is not None:
            base_clip, clip = float(base_scores.mean()), float(clip_scores(scorer, side).mean())
            record.update(
                base_clip_score=base_clip,
                clip_score=clip,
                clip_loss=(base_clip - clip) / base_clip if base_clip else None,
            )
            if budget is not None and (record["clip_loss"] is None or record["clip_loss"] > budget):
                reasons.append("over_budget")
                record["error"] = record["error"] or f"CLIP loss {record['clip_loss']:+.2%} over the budget {budget:g}"
        if target is not None:
            record["verdict"] = speed_verdict(ratios, target)
            if record["verdict"] != "passed":
                reasons.append("too_slow" if record["verdict"] == "failed" else "inconclusive")
                record["error"] = record["error"] or (
                    f"speedup {record['speedup']:.2f}x (interval {low:.2f}-{high:.2f} over {len(ratios)} passes) "
                    + ("below" if record["verdict"] == "failed" else "around")
                    + f" the target {target:g}x"
                )
    record["reasons"] = sorted(set(reasons), key=REASONS.index)
    record["reason"] = record["reasons"][0] if record["reasons"] else None
    record["passed"] = None if target is None and budget is None else not record["reasons"]
    return record
