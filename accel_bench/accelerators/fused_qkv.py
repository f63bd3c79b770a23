"""Fused QKV projections (diffusers' ``fuse_qkv_projections``): one matmul for query, key and value.

Part of the production recipe (``conf/accel/fast.yaml``). Self-attention's three projections become
one ``to_qkv`` linear layer, cross-attention's key and value one ``to_kv``, in the UNet and the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .base import Accelerator, Code, Target


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

    @classmethod
    def check(cls, params: FusedQKVParams, target: Target) -> None:
        pass

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        pipe.fuse_qkv_projections(unet=True, vae=True)

    def remove(self, pipe: Any) -> None:
        # the original processors come back; the fused layers diffusers leaves go with the snapshot
        pipe.unfuse_qkv_projections(unet=True, vae=True)

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        return Code(load=("    pipe.fuse_qkv_projections()  # one matmul for query, key and value",))
