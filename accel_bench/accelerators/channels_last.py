"""channels_last memory format for the UNet and the VAE: convolutions read NHWC, as cuDNN prefers.

Part of the production recipe (``conf/accel/fast.yaml``). The weights keep their values; only their
strides change, and leaving puts the contiguous layout back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from .base import Accelerator, Code, Target

_MODULES = ("unet", "vae")


@dataclass(frozen=True)
class ChannelsLastParams:
    pass


class ChannelsLast(Accelerator):
    name = "channels_last"
    label = "channels_last"
    Params = ChannelsLastParams
    same_arithmetic = True
    order = 35  # before quantization: int8 weights are not converted between layouts

    @classmethod
    def check(cls, params: ChannelsLastParams, target: Target) -> None:
        pass

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        for name in _MODULES:
            getattr(pipe, name).to(memory_format=torch.channels_last)

    def remove(self, pipe: Any) -> None:
        # ``Module.to`` replaces each parameter's data in place: the snapshot cannot see it, this can
        for name in _MODULES:
            getattr(pipe, name).to(memory_format=torch.contiguous_format)

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        return Code(
            load=tuple(f"    pipe.{name}.to(memory_format=torch.channels_last)" for name in _MODULES),
        )
