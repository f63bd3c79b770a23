"""Fused QKV projections (diffusers' ``fuse_qkv_projections``): one matmul for query, key and value.

Part of the production recipe (``conf/accel/fast.yaml``). Self-attention's three projections become
one ``to_qkv`` linear layer, cross-attention's key and value one ``to_kv``, in the UNet and the VAE.
The fused layers are made once per run and installed again on every application (``made``): diffusers
makes new ones on each call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .base import Accelerator, Code, Target
from .made import Made

# a fused layer diffusers' ``Attention.fuse_projections`` makes -> the layers it concatenates
_FUSED = {
    "to_qkv": ("to_q", "to_k", "to_v"),
    "to_kv": ("to_k", "to_v"),
    "to_added_qkv": ("add_q_proj", "add_k_proj", "add_v_proj"),
}


@dataclass(frozen=True)
class FusedQKVParams:
    pass


class FusedQKV(Accelerator):
    name = "fused_qkv"
    label = "fused QKV"
    Params = FusedQKVParams
    same_arithmetic = True
    order = 40  # after the methods that patch attention, before quantization turns the fused weights to int8
    excludes = {
        "tgate": "T-GATE's attention computes query, key and value with their own layers "
        "(tgate_utils.tgate_processor), so the fused projection would never run"
    }

    def __init__(self, params: FusedQKVParams, target: Target):
        super().__init__(params, target)
        self.made: Made[Any] = Made()  # (attention module, fused layer's name) -> the fused layer

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        pipe.fuse_qkv_projections(unet=True, vae=True)
        for component in (pipe.unet, pipe.vae):
            for attention in component.modules():
                for fused, layers in _FUSED.items():
                    made = attention._modules.get(fused)
                    if made is not None and getattr(attention, "fused_projections", False):
                        sources = [p for layer in layers for p in getattr(attention, layer).parameters()]
                        attention._modules[fused] = self.made.get((attention, fused), sources, lambda: made)

    def remove(self, pipe: Any) -> None:
        # the original processors come back; the fused layers diffusers leaves go with the snapshot
        pipe.unfuse_qkv_projections(unet=True, vae=True)

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        return Code(load=("    pipe.fuse_qkv_projections()  # one matmul for query, key and value",))
