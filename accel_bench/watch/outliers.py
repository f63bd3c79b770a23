"""Batches far from their side's others: a batch whose time is more than ``OUTLIER_RATIO`` times the
median of the side's measured batches of the same size, or less than the median over it.

Chosen from measurements: over the 266 GPU sides recorded under bench/results (H100 and H200; SD1.5,
SD2.1, SDXL; batch 1 and 4; eager, compiled, every method), a side's slowest batch was at its median
1.13x, above 1.25x for 27% of sides and above 1.5x for 2% (eager host-bound SD1.5 at batch 1); the
disturbed batches the rule is for were 4.5-10x (a CUDA-graph re-recording, a CPU-bound neighbour).
1.5x lies between: it re-measures a pass for a batch that no clean run shows, and a pass re-measured
for nothing costs one pass.
"""

from __future__ import annotations

import statistics
from typing import Sequence

OUTLIER_RATIO = 1.5


MIN_BATCHES = 5  # of one size before any is judged: with fewer, one slow batch moves the median itself


def outliers(times_s: Sequence[float], sizes: Sequence[int], ratio: float = OUTLIER_RATIO) -> list[int]:
    """Indices of the outlying batches; a size seen fewer than ``MIN_BATCHES`` times is not judged."""
    by_size: dict[int, list[float]] = {}
    for seconds, size in zip(times_s, sizes):
        by_size.setdefault(size, []).append(seconds)
    medians = {size: statistics.median(times) for size, times in by_size.items() if len(times) >= MIN_BATCHES}
    return [
        i
        for i, (seconds, size) in enumerate(zip(times_s, sizes))
        if size in medians and not medians[size] / ratio <= seconds <= medians[size] * ratio
    ]
