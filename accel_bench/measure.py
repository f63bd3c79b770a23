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
    warmup_times_s: list[float]  # seconds per warm-up batch (synchronized like the measured ones)
    peak_mem_gb: Optional[float]  # torch.cuda.max_memory_allocated over the measured batches; None on CPU
    flops_per_image: Optional[float]  # GFLOP per image, counted on one untimed image; None when not counted
    images: np.ndarray = field(repr=False)  # (num_images, H, W, 3) floats in [0, 1], in prompt order

    @property
    def warmup_batches(self) -> int:
        return len(self.warmup_times_s)

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

    def run_batch(start: int, size: int = batch_size) -> np.ndarray:
        batch = list(prompts[start : start + size])
        generators = prompt_generators(seed, start, len(batch))
        if before_batch is not None:
            before_batch(prompt_seed(seed, start))
        return generate(batch, generators)

    def timed_batch(start: int) -> tuple[float, np.ndarray]:
        _synchronize(device)
        began = time.perf_counter()
        output = run_batch(start)
        _synchronize(device)
        return time.perf_counter() - began, output

    warmup = starts[: min(warmup_batches, len(starts))]
    warmup_times = [timed_batch(start)[0] for start in tqdm(warmup, desc=f"{label} warm-up", unit="batch", leave=False)]

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, sizes, images = [], [], []
    for start in tqdm(starts, desc=label, unit="batch", leave=False):
        seconds, output = timed_batch(start)
        times.append(seconds)
        sizes.append(len(output))
        images.append(np.asarray(output, dtype=np.float32))
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None

    flops = None
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        # FLOPs per image do not depend on the batch size: one image is enough, and cheap
        counter = FlopCounterMode(display=False)
        with counter:
            run_batch(0, size=1)
        flops = counter.get_total_flops() / 1e9

    return Measurement(
        batch_times_s=times,
        batch_sizes=sizes,
        warmup_times_s=warmup_times,
        peak_mem_gb=peak,
        flops_per_image=flops,
        images=np.concatenate(images),
    )
