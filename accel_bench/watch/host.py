"""A busy host, seen by the kernel's own accounting: the time the measured process's threads spent
runnable but waiting for a CPU (``/proc/<pid>/task/<tid>/schedstat``, second field) while other work
had the CPUs, plus the time the hypervisor took this virtual machine's CPUs away (``/proc/stat``'s
steal).

A thread that wants a CPU and gets one does not wait; a thread that sleeps (on I/O, on a pipe, in a
synchronize that yields) does not wait either. So the run-queue wait summed over the process's
threads, as a share of the batch's wall time, is the CPU the batch asked for and did not get, and it
needs no model of how many threads the work "should" use. But a process can make itself wait: more
runnable threads than CPUs (a candidate's thread count, a tokenizer's thread pool polling between
batches) wait for each other on a quiet machine. Only other work can take a CPU from it, so the wait
counted is at most the CPU time everything else used meanwhile (the machine's busy time in
``/proc/stat`` less the process's own, from schedstat's first field): waits among its own threads are
its workload, not a busy host. A thread whose virtual CPU the hypervisor runs something else on is
"running" to the guest: steal is that wait, summed over the CPUs (an idle virtual CPU is not stolen
from), and counts in full. Measured on the 2-core CI machine (bench/results/disturbance/): a batch
alone waits 0-4% of its wall time, beside CPU-bound processes 60-150%; on the H200's host, GPU
batches waited at most 2%; a red-team session of a dozen sandboxes on 2 cores crossed 25% once. A
batch is ``contended`` above ``CONTENDED_WAIT_SHARE``.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Optional

CONTENDED_WAIT_SHARE = 0.5

Pids = Callable[[], Iterable[int]]
STAT = "/proc/stat"


def own_pids() -> list[int]:
    return [os.getpid()]


def _thread_times(pids: Iterable[int]) -> Optional[dict[tuple[int, int], tuple[int, int]]]:
    """(ns on a CPU, ns waiting in the run queue) of every thread of ``pids``; None where the kernel
    does not report them."""
    times: dict[tuple[int, int], tuple[int, int]] = {}
    seen_any = False
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ran, waited = f.read().split()[:2]
                times[(pid, int(tid))] = (int(ran), int(waited))
                seen_any = True
            except (OSError, ValueError):
                continue
    return times if seen_any else None


def machine_ns(stat: str = STAT) -> Optional[tuple[int, int]]:
    """(ns the machine's CPUs were busy, ns the hypervisor stole from them) since boot, all CPUs
    (steal is 0 on bare metal); None where the kernel does not report them."""
    try:
        with open(stat) as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    except (OSError, ValueError):
        return None
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) * tick_ns, steal * tick_ns


class HostWatch:
    """Run-queue wait of the processes ``pids`` names (called at each start: a candidate may fork)
    that others' work explains, and the CPU time stolen from the machine meanwhile (``stat``: the
    kernel's ``/proc/stat``)."""

    def __init__(self, pids: Pids = own_pids, stat: str = STAT):
        self.pids, self.stat = pids, stat
        self._threads: Optional[dict[tuple[int, int], tuple[int, int]]] = None
        self._machine: Optional[tuple[int, int]] = None

    def start(self) -> None:
        self._threads, self._machine = _thread_times(self.pids()), machine_ns(self.stat)

    def stop(self, wall_s: float) -> Optional[float]:
        """The share of ``wall_s`` the threads waited for a CPU that other work held (threads started
        since ``start`` count from zero), plus the share stolen; every wait where the machine's times
        cannot be read; None where the threads' cannot."""
        threads, machine = _thread_times(self.pids()), machine_ns(self.stat)
        if self._threads is None or threads is None or wall_s <= 0:
            return None
        ran = sum(r - self._threads.get(t, (0, 0))[0] for t, (r, _) in threads.items())
        waited = max(0, sum(w - self._threads.get(t, (0, 0))[1] for t, (_, w) in threads.items()))
        if machine is None or self._machine is None:
            return waited / 1e9 / wall_s
        others = max(0, machine[0] - self._machine[0] - ran)
        stolen = max(0, machine[1] - self._machine[1])
        return (min(waited, others) + stolen) / 1e9 / wall_s
