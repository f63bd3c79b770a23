"""channels_last memory format for the UNet and the VAE: convolutions read NHWC, as cuDNN prefers.

Part of the production recipe (``conf/accel/fast.yaml``). The weights keep their values; only their
strides change, and leaving puts the original tensors back. The copies are made once per run and
installed again on every application (``made``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from .base import Accelerator, Code, Target
from .made import Made

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

    def __init__(self, params: ChannelsLastParams, target: Target):
        super().__init__(params, target)
        self.made: Made[torch.Tensor] = Made()  # 4-d tensor -> its channels_last copy

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        # what ``Module.to(memory_format=...)`` does (4-d parameters' data and buffers), with the copies kept
        self.parameters: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self.buffers: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
        for name in _MODULES:
            component = getattr(pipe, name)
            for p in component.parameters():
                if p.dim() == 4:
                    self.parameters.append((p, p.data))
                    p.data = self.made.get(p, [p], lambda: p.data.to(memory_format=torch.channels_last))
            for module in component.modules():
                for key, b in module._buffers.items():
                    if b is not None and b.dim() == 4:
                        self.buffers.append((module, key, b))
                        module._buffers[key] = self.made.get(b, [b], lambda: b.to(memory_format=torch.channels_last))

    def remove(self, pipe: Any) -> None:
        # the original tensors, at their own addresses: the snapshot cannot see a parameter's data, this can
        for p, data in self.parameters:
            p.data = data
        for module, key, b in self.buffers:
            module._buffers[key] = b

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        return Code(
            load=tuple(f"    pipe.{name}.to(memory_format=torch.channels_last)" for name in _MODULES),
        )
