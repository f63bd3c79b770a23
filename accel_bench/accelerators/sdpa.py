"""The scaled-dot-product-attention backend: the one kernel family ``F.scaled_dot_product_attention`` may use.

Part of the production recipe's choices: PyTorch picks a backend per call among those enabled; this
enables exactly one (``torch.backends.cuda.enable_*_sdp``, process-wide, read on CPU too), so a row
says which kernel ran. A backend that cannot run the call's inputs (flash in fp32 on a GPU) fails
the run with PyTorch's reason instead of falling back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError
from .base import Accelerator, Code, Target

# backend -> the torch.backends.cuda switch that enables it
SWITCHES = {
    "flash": "flash_sdp",
    "efficient": "mem_efficient_sdp",
    "cudnn": "cudnn_sdp",
    "math": "math_sdp",
}
CPU_BACKENDS = ("flash", "math")  # the CPU has no memory-efficient or cuDNN attention


@dataclass(frozen=True)
class SDPAParams:
    sdpa_backend: str


class SDPA(Accelerator):
    name = "sdpa"
    label = "SDPA backend"
    Params = SDPAParams
    same_arithmetic = True
    order = 45
    constants = {"sdpa_backend": "SDPA_BACKEND"}

    @classmethod
    def check(cls, params: SDPAParams, target: Target) -> None:
        allowed = CPU_BACKENDS if target.device == "cpu" else tuple(SWITCHES)
        if params.sdpa_backend not in allowed:
            where = " on a CPU" if target.device == "cpu" else ""
            raise ConfigError("accel.sdpa_backend", params.sdpa_backend, " | ".join(allowed) + where)

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        cuda = torch.backends.cuda
        self.was = {switch: getattr(cuda, f"{switch}_enabled")() for switch in SWITCHES.values()}
        for backend, switch in SWITCHES.items():
            getattr(cuda, f"enable_{switch}")(backend == self.params.sdpa_backend)

    def remove(self, pipe: Any) -> None:
        for switch, enabled in self.was.items():
            getattr(torch.backends.cuda, f"enable_{switch}")(enabled)

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        return Code(
            load=tuple(
                f'    torch.backends.cuda.enable_{switch}(SDPA_BACKEND == "{backend}")  # the one attention kernel'
                for backend, switch in SWITCHES.items()
            )
        )
