"""Work a side left queued on the GPU, charged to that side: after each of a side's passes the trusted
side waits until the device is idle before the next side starts, and adds the wait to the pass.

Idle is seen from a process the candidate cannot touch (the trusted one): a fixed probe, twenty
256x256 matrix products timed with a synchronize. Contexts of different processes take turns on the
GPU in time slices, so while any other process has kernels queued the probe waits for its slice:
0.36 ms on an idle H200, 2.69 ms beside another process's products. The device is idle when the
probe is back within ``IDLE_FACTOR`` of its idle time, measured when the session starts (the sides
loaded and frozen); bench/results/disturbance/ has what it drained.
"""

from __future__ import annotations

import statistics
import time

import torch

IDLE_FACTOR = 2.0
TIMEOUT_S = 120.0  # a side whose leftover work outlasts this is charged all of it and flagged


class Drain:
    def __init__(self, device: torch.device, probes: int = 30):
        self.device = device
        self._x = torch.randn(256, 256, device=device)
        self.probe()  # the first call pays for the kernels' loading
        self.idle_s = statistics.median(self.probe() for _ in range(probes))

    def probe(self) -> float:
        torch.cuda.synchronize(self.device)
        began = time.perf_counter()
        y = self._x
        for _ in range(20):
            y = y @ self._x
        torch.cuda.synchronize(self.device)
        return time.perf_counter() - began

    def until_idle(self) -> tuple[float, bool]:
        """(seconds until the device was idle, whether it got idle within ``TIMEOUT_S``)."""
        began = time.perf_counter()
        while True:
            at = time.perf_counter()
            if self.probe() <= self.idle_s * IDLE_FACTOR:
                return at - began, True
            if at - began > TIMEOUT_S:
                return at - began, False
