"""From measured passes and returned images to a verdict with a reason a script can read.

Speed: the per-pass speedups (candidate and baseline passes interleaved, same inputs pass for pass)
give a median and a distribution-free confidence interval for it (order statistics, >= 90% where
the passes allow; with up to 5 passes it is their whole range). ``passed`` when the interval lies
at or above the target, ``failed`` (``too_slow``) when below, ``inconclusive`` when the target lies
inside: the session re-measures with more passes, up to a cap, and what still straddles stays
``inconclusive``. Passes are watched (``accel_bench.watch``: a busy host, other GPU work, outlier
batches): pairs whose baseline pass was not clean are left out; the candidate's own passes that were
not clean count unless dropping them changes nothing (``watched_verdict``); otherwise, or with fewer
clean pairs than the passes asked for, the verdict is ``inconclusive`` with the reason ``disturbed``,
never ``passed``.

Images: every returned batch has the task's count and size (checked in the round trip); no image is
constant, no two different inputs get the same image, and each image is faithful to the baseline's
for the same prompt and seed: PSNR >= ``min_psnr_db`` (bench/results/fidelity_floor/ says why 25 dB).
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass
from math import comb
from typing import Optional, Sequence

import numpy as np

from ..metrics import psnr_db
from .protocol import Exchange

# In the order a record names them: the first that applies is the record's ``reason``.
REASONS = (
    "sandbox",
    "missing",
    "baseline_failed",
    "crashed",
    "timed_out",
    "out_of_memory",
    "wrong_images",
    "unfaithful",
    "no_better_than_fewer_steps",
    "over_budget",
    "disturbed",
    "too_slow",
    "inconclusive",
)
CONFIDENCE = 0.9


def median_interval(values: Sequence[float]) -> tuple[float, float]:
    """[x(k), x(n-k+1)] of the sorted values, with the largest k whose coverage of the median is
    >= 90%; k = 1 (min, max) when no k reaches it."""
    ordered, n = sorted(values), len(values)
    k = 1
    while k + 1 <= n // 2:
        below = sum(comb(n, i) for i in range(k + 1)) / 2**n  # P(Binomial(n, 1/2) <= k)
        if 1 - 2 * below < CONFIDENCE:
            break
        k += 1
    return ordered[k - 1], ordered[n - k]


def speed_verdict(ratios: Sequence[float], target: float) -> str:
    low, high = median_interval(ratios)
    if low >= target:
        return "passed"
    if high < target:
        return "failed"
    return "inconclusive"


def watched_verdict(clean: Sequence[float], kept: Sequence[float], target: float, needed: int) -> tuple[str, bool]:
    """(verdict, whether a disturbance decided it). ``kept``: the per-pass speedups of every pass pair
    whose baseline pass was clean (a candidate cannot disturb the baseline: it is frozen, its queued
    work drained); ``clean``: those whose candidate pass was clean too. A candidate cannot choose which
    of its passes count: its unclean passes are dropped only where keeping them gives the same verdict.
    ``passed`` needs ``needed`` clean pairs; ``failed`` stands on every kept pair (the candidate's own
    disturbance only ever slowed it). Otherwise the verdict is ``inconclusive`` and disturbed."""
    if not kept:
        return "inconclusive", True
    on_kept = speed_verdict(kept, target)
    if not clean:
        return ("failed", False) if on_kept == "failed" else ("inconclusive", True)
    verdict = speed_verdict(clean, target)
    if len(kept) > len(clean) and on_kept != verdict:
        return "inconclusive", True
    if verdict == "passed" and len(clean) < max(1, needed):
        return "inconclusive", True
    return verdict, False


@dataclass
class ImageFindings:
    checked: int  # images compared with the baseline's for the same input
    wrong: Optional[str]  # why the images are not images of the task, if they are not
    psnr_db: list[float]  # per checked image (inf: identical)
    unfaithful: int  # checked images below the floor


def input_key(exchange: Exchange, i: int) -> tuple[str, int]:
    """What makes an image the same input's: its prompt and seed."""
    return exchange.prompts[i], exchange.seeds[i]


def images_by_input(exchanges: Sequence[Exchange]) -> dict[tuple[str, int], np.ndarray]:
    return {input_key(e, i): e.images[i] for e in exchanges for i in range(len(e.images))}


def paired_images(side: Sequence[Exchange], baseline: Sequence[Exchange]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(the baseline's images, the side's, their prompts) for every input both saw, as [0, 1] arrays."""
    reference = images_by_input(baseline)
    keys = [input_key(e, i) for e in side for i in range(len(e.images))]
    mine = [e.images[i] for e in side for i in range(len(e.images))]
    pairs = [(reference[k], image, k[0]) for k, image in zip(keys, mine) if k in reference]
    if not pairs:
        return np.zeros((0, 1, 1, 3)), np.zeros((0, 1, 1, 3)), []
    base, images, prompts = zip(*pairs)
    return np.stack(base).astype(np.float32) / 255, np.stack(images).astype(np.float32) / 255, list(prompts)


def image_findings(side: Sequence[Exchange], baseline: Sequence[Exchange], min_psnr_db: float) -> ImageFindings:
    """Check every image a side returned against the baseline's images for the same inputs."""
    reference = images_by_input(baseline)
    seen: dict[str, tuple[str, int]] = {}
    wrong, values = None, []
    for exchange in side:
        for i, image in enumerate(exchange.images):
            key = input_key(exchange, i)
            if wrong is None and int(image.max()) - int(image.min()) <= 2:
                wrong = f"a constant image (all pixels {int(image.min())}..{int(image.max())}) for prompt {key[0]!r}"
            digest = hashlib.sha1(image.tobytes()).hexdigest()
            if wrong is None and seen.setdefault(digest, key) != key:
                wrong = f"the same image for two different inputs ({seen[digest][0]!r}, seed {seen[digest][1]} and {key[0]!r}, seed {key[1]})"
            if key in reference:
                values.append(
                    float(
                        psnr_db(reference[key][None].astype(np.float32) / 255, image[None].astype(np.float32) / 255)[0]
                    )
                )
    return ImageFindings(len(values), wrong, values, sum(v < min_psnr_db for v in values))


def summarize_psnr(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """(median, min) with identical images (inf) counted as 99 dB, so records stay finite JSON."""
    if not values:
        return None, None
    finite = [min(v, 99.0) for v in values]
    return statistics.median(finite), min(finite)
