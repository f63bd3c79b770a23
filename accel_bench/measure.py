"""The one timing path: every speed number in accel_bench comes from ``measure``.

Fair by construction: prompts go in batches of ``batch_size``; each prompt has its own CPU
generator seeded from (seed, prompt index), so an image does not depend on how prompts are
batched; warm-up batches use the same generators, which are made anew for the measured
batches; on a GPU ``torch.cuda.synchronize()`` brackets every timed batch.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

# generate(prompts, generators) -> images as float arrays in [0, 1], shape (batch, height, width, 3)
Generate = Callable[[list[str], list[torch.Generator]], np.ndarray]


def prompt_seed(seed: int, index: int) -> int:
    """A per-prompt seed that depends only on (seed, index), never on batching."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def prompt_generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(prompt_seed(seed, start + i)) for i in range(count)]


@dataclass
class Measurement:
    """Timings of one side of a comparison; every figure names its unit and its denominator."""

    batch_times_s: list[float]  # seconds per measured batch
    batch_sizes: list[int]
    warmup_batches: int
    peak_mem_gb: Optional[float]  # torch.cuda.max_memory_allocated over the measured batches; None on CPU
    flops_per_image: Optional[float]  # GFLOP per image from one untimed batch; None when not counted
    images: np.ndarray = field(repr=False)  # (num_images, H, W, 3) floats in [0, 1], in prompt order

    @property
    def num_images(self) -> int:
        return sum(self.batch_sizes)

    @property
    def latency_s(self) -> float:
        """Seconds per image: total measured time / images."""
        return sum(self.batch_times_s) / self.num_images

    @property
    def images_per_s(self) -> float:
        return self.num_images / sum(self.batch_times_s)

    @property
    def batch_time_median_s(self) -> float:
        return statistics.median(self.batch_times_s)

    @property
    def batch_time_min_s(self) -> float:
        return min(self.batch_times_s)

    @property
    def batch_time_max_s(self) -> float:
        return max(self.batch_times_s)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    generate: Generate,
    prompts: Sequence[str],
    *,
    batch_size: int,
    seed: int,
    warmup_batches: int,
    device: torch.device,
    before_batch: Optional[Callable[[int], None]] = None,
    count_flops: bool = True,
    label: str = "",
) -> Measurement:
    """Time ``generate`` over ``prompts``; ``before_batch(seed)`` runs untimed before every call."""
    starts = list(range(0, len(prompts), batch_size))

    def run_batch(start: int) -> np.ndarray:
        batch = list(prompts[start : start + batch_size])
        generators = prompt_generators(seed, start, len(batch))
        if before_batch is not None:
            before_batch(prompt_seed(seed, start))
        return generate(batch, generators)

    warmup = starts[: min(warmup_batches, len(starts))]
    for start in tqdm(warmup, desc=f"{label} warm-up", unit="batch", leave=False):
        run_batch(start)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, sizes, images = [], [], []
    for start in tqdm(starts, desc=label, unit="batch", leave=False):
        _synchronize(device)
        began = time.perf_counter()
        output = run_batch(start)
        _synchronize(device)
        times.append(time.perf_counter() - began)
        sizes.append(len(output))
        images.append(np.asarray(output, dtype=np.float32))
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None

    flops = None
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            counted = run_batch(starts[0])
        flops = counter.get_total_flops() / len(counted) / 1e9

    return Measurement(
        batch_times_s=times,
        batch_sizes=sizes,
        warmup_batches=len(warmup),
        peak_mem_gb=peak,
        flops_per_image=flops,
        images=np.concatenate(images),
    )
