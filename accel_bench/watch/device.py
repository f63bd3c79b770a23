"""Other work on the measured GPU, seen through NVML (``nvidia-ml-py``, imported as ``pynvml``): the
processes that hold a context on the device, and each one's SM utilisation over a pass.

A pass during which a process that is not part of the measurement ran kernels on the measured GPU
is ``disturbed``. Where NVML cannot say (no package, no driver, a CPU run, process ids of another
pid namespace), the watch says ``unchecked`` with the reason, once per row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from .host import own_pids

if TYPE_CHECKING:  # rows name other processes without torch (sweepers and launchers import them)
    import torch

Pids = Callable[[], Iterable[int]]


@dataclass(frozen=True)
class Foreign:
    """A process that used the measured GPU during a pass."""

    pid: int
    sm_util: Optional[int]  # percent of the sample period its kernels ran; None where the device does not say

    def __str__(self) -> str:
        return f"pid {self.pid}" + (f" (up to {self.sm_util}% SM)" if self.sm_util is not None else "")


def busiest(seen: Iterable[Foreign]) -> list[Foreign]:
    """One entry per process, with the highest share it was seen at, by pid."""
    best: dict[int, Foreign] = {}
    for f in seen:
        known = best.get(f.pid)
        if known is None or (f.sm_util or 0) > (known.sm_util or 0):
            best[f.pid] = f
    return [best[pid] for pid in sorted(best)]


def load_nvml() -> Any:
    import pynvml  # nvidia-ml-py: the [gpu] extra

    pynvml.nvmlInit()
    return pynvml


def nvml_handle(nvml: Any, device: torch.device) -> Any:
    """The NVML handle of the CUDA device, by UUID (CUDA_VISIBLE_DEVICES renumbers devices; NVML does not)."""
    import torch

    uuid = str(torch.cuda.get_device_properties(device).uuid)
    return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")


class DeviceWatch:
    """Foreign GPU work over each pass; ``ours`` names the processes of the measurement itself."""

    def __init__(
        self,
        device: torch.device,
        ours: Pids = own_pids,
        nvml: Callable[[], Any] = load_nvml,
        handle: Callable[[Any, torch.device], Any] = nvml_handle,
    ):
        self.ours = ours
        self.isolation = "cpu"  # checked | unchecked: <why> | cpu (a CPU run: the host watch covers it)
        self._nvml: Any = None
        self._handle: Any = None
        self._since = 0
        if device.type != "cuda":
            return
        try:
            self._nvml = nvml()
            self._handle = handle(self._nvml, device)
        except Exception as error:  # no package, no driver, no permission: said in the row
            self._nvml = None
            self.isolation = f"unchecked: NVML unavailable ({type(error).__name__}: {error})".rstrip()
            return
        self.isolation = "checked"

    def _running(self) -> set[int]:
        return {p.pid for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)}

    def start(self) -> None:
        if self._nvml is not None:
            self._since = int(time.time() * 1e6)

    def stop(self) -> list[Foreign]:
        """The foreign processes that ran kernels on the device since ``start`` (or, where the device
        gives no per-process utilisation, that held a context on it)."""
        if self._nvml is None:
            return []
        ours = set(self.ours())
        running = self._running()
        if running and not ours & running:  # the measured processes hold contexts: they must be listed
            self._nvml = None
            self.isolation = "unchecked: NVML's process ids are not this process's (another pid namespace)"
            return []
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(self._handle, self._since)
        except self._nvml.NVMLError as error:
            if isinstance(error, self._nvml.NVMLError_NotFound):  # no process ran kernels since
                return []
            return sorted((Foreign(pid, None) for pid in running - ours), key=lambda f: f.pid)
        used: dict[int, int] = {}
        for sample in samples:
            if sample.pid not in ours and sample.smUtil > 0 and sample.timeStamp > self._since:
                used[sample.pid] = max(used.get(sample.pid, 0), sample.smUtil)
        return [Foreign(pid, used[pid]) for pid in sorted(used)]
