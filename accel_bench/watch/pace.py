"""The host CPU's own pace: a fixed piece of work timed on the calling thread's CPU clock.

A busy host that steals no time can still slow a thread that has its CPU: a neighbour on the same
physical core (SMT), on the same last-level cache or memory controller, or a socket's frequency
budget shared with other tenants. The guest sees none of it as a wait (``host``: run-queue waits,
steal); the same instructions simply take more CPU time. An eager pipeline whose main thread issues
every kernel runs at that pace. Two probes, each the least of ``REPEATS`` runs on the thread's CPU
clock (a preemption inside one does not count, it is the host watch's): ``interpreter`` (CPython's
dispatch, dictionaries and small integers, the host work a pipeline's Python does) and ``memory``
(copying a buffer larger than a core's private caches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

REPEATS = 3
INTERPRETER_ITERATIONS = 20_000  # about 1 ms of CPython 3.12 on a 2-3 GHz core
MEMORY_BYTES = 8 << 20  # past a core's L2, within or past a socket's L3

_source = bytearray(MEMORY_BYTES)
_target = bytearray(MEMORY_BYTES)


def _interpreter() -> int:
    table: dict[int, int] = {}
    total = 0
    for i in range(INTERPRETER_ITERATIONS):
        table[i & 63] = i
        total += table[i & 63] ^ (i >> 3)
    return total


def _memory() -> None:
    _target[:] = _source


def _least_cpu_s(work) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(REPEATS):
        began = time.thread_time_ns()
        work()
        best = min(best, (time.thread_time_ns() - began) / 1e9)
    return best


@dataclass(frozen=True)
class Pace:
    """CPU seconds of the two probes, now, on the calling thread."""

    interpreter_s: float
    memory_s: float


def probe() -> Pace:
    return Pace(_least_cpu_s(_interpreter), _least_cpu_s(_memory))
