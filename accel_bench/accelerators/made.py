"""What a method makes from the pipeline's weights, made once and installed again on every application.

A run applies a side's methods for each of its passes and removes them after (``accelerators.applied``).
A method that makes new weights (fused projections, quantized or re-laid-out tensors) would make them
again each time, at new addresses; a CUDA graph reads its weights at the addresses it was captured
with, so every pass after the first would record its graphs again inside its timed batches. Kept here,
every application installs the same objects and the graphs captured in the first pass replay.
"""

from __future__ import annotations

from typing import Callable, Generic, Hashable, Sequence, TypeVar

import torch

T = TypeVar("T")


def _stamp(sources: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, int, int]]:
    """Which tensors, where, at which in-place version: a change to any of them means making again."""
    return [(s, s.data_ptr(), s._version) for s in sources]


def _same(a: list[tuple[torch.Tensor, int, int]], b: list[tuple[torch.Tensor, int, int]]) -> bool:
    return len(a) == len(b) and all(x is y and xp == yp and xv == yv for (x, xp, xv), (y, yp, yv) in zip(a, b))


class Made(Generic[T]):
    """Objects made from source tensors, by key (a module or tensor of the pipeline, which it keeps
    alive); made again only when a source tensor changed."""

    def __init__(self) -> None:
        self._kept: dict[Hashable, tuple[list[tuple[torch.Tensor, int, int]], T]] = {}

    def get(self, key: Hashable, sources: Sequence[torch.Tensor], make: Callable[[], T]) -> T:
        stamp = _stamp(sources)
        kept = self._kept.get(key)
        if kept is not None and _same(kept[0], stamp):
            return kept[1]
        made = make()
        self._kept[key] = (stamp, made)
        return made
