"""A busy host, seen by the kernel's own accounting: the time the measured process's threads spent
runnable but waiting for a CPU (``/proc/<pid>/task/<tid>/schedstat``, second field), plus the time
the hypervisor took this virtual machine's CPUs away while they had work (``/proc/stat``'s steal).

A thread that wants a CPU and gets one does not wait; a thread that sleeps (on I/O, on a pipe, in a
synchronize that yields) does not wait either. So the run-queue wait summed over the process's
threads, as a share of the batch's wall time, is the CPU the batch asked for and did not get, and it
needs no model of how many threads the work "should" use. A thread whose virtual CPU the hypervisor
runs something else on waits too, but the guest counts it as running: steal is that wait, summed
over the CPUs (an idle virtual CPU is not stolen from), so it adds to the same share. Measured on the 2-core CI machine
(bench/results/disturbance/): a batch alone waits 0-4% of its wall time, beside CPU-bound processes
60-150%; on the H200's host, GPU batches waited at most 2%; a red-team session of a dozen sandboxes on 2 cores crossed 25% once. A batch is ``contended`` above
``CONTENDED_WAIT_SHARE``.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Optional

CONTENDED_WAIT_SHARE = 0.5

Pids = Callable[[], Iterable[int]]
STAT = "/proc/stat"


def own_pids() -> list[int]:
    return [os.getpid()]


def _thread_waits(pids: Iterable[int]) -> Optional[dict[tuple[int, int], int]]:
    """Run-queue wait in ns of every thread of ``pids``; None where the kernel does not report it."""
    waits: dict[tuple[int, int], int] = {}
    seen_any = False
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    waits[(pid, int(tid))] = int(f.read().split()[1])
                seen_any = True
            except (OSError, ValueError, IndexError):
                continue
    return waits if seen_any else None


def stolen_ns(stat: str = STAT) -> Optional[int]:
    """CPU time the hypervisor stole from this machine's CPUs since boot, all CPUs (0 on bare metal);
    None where the kernel does not report it."""
    try:
        with open(stat) as f:
            fields = f.readline().split()
        return int(fields[8]) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class HostWatch:
    """Run-queue wait of the processes ``pids`` names (called at each start: a candidate may fork) and
    the CPU time stolen from the machine meanwhile (``stat``: the kernel's ``/proc/stat``)."""

    def __init__(self, pids: Pids = own_pids, stat: str = STAT):
        self.pids, self.stat = pids, stat
        self._start: Optional[dict[tuple[int, int], int]] = None
        self._stolen: Optional[int] = None

    def start(self) -> None:
        self._start, self._stolen = _thread_waits(self.pids()), stolen_ns(self.stat)

    def stop(self, wall_s: float) -> Optional[float]:
        """The share of ``wall_s`` the threads spent waiting for a CPU, in the guest's run queue or on
        a stolen CPU (threads started since ``start`` count from zero); None where it cannot be read."""
        end, stolen = _thread_waits(self.pids()), stolen_ns(self.stat)
        if self._start is None or end is None or wall_s <= 0:
            return None
        waited = sum(ns - self._start.get(thread, 0) for thread, ns in end.items())
        if stolen is not None and self._stolen is not None:
            waited += stolen - self._stolen
        return max(0, waited) / 1e9 / wall_s
