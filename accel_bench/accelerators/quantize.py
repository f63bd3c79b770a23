"""torchao quantization of the UNet's (and VAE decoder's) token-wise linear layers: int8 or fp8 matmuls.

Part of the production recipe (``conf/accel/fast.yaml``: dynamic int8, as in the PyTorch team's
"Diffusion, Fast"). ``torchao.quantization.quantize_`` swaps each quantized ``nn.Linear`` weight for
a quantized tensor; leaving puts every original weight back (torchao has no inverse). Only the
layers of the attention blocks are quantized (projections and feed-forward: one row per token); the
per-image embeddings' layers (time, SDXL's added conditions) see one row per image, too few for an
int8 matmul on a GPU (``torch._int_mm`` needs more than 16 rows) and too little work to gain, as
the blog's own filter leaves its small layers out. Each layer is quantized once per run and its
quantized weight installed again on every application (``made``). Eager, the quantize/dequantize
work usually costs more than it saves: the gain comes with torch.compile.

torchao's configs set process-wide inductor options by default (``set_inductor_config``: coordinate
descent tuning among them, which makes a first compile of SD1.5's UNet take many minutes on a GPU and
outlives the method): quantizing here changes the weights only. Inductor's tuning is the caller's to
choose, e.g. ``TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1``, which the row records (``compile_settings``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, List, Mapping, Sequence

import torch

from ..errors import ConfigError
from .base import Accelerator, Code, Target
from .made import Made

# quantization -> torchao's config class
SCHEMES = {
    "int8_dynamic": "Int8DynamicActivationInt8WeightConfig",
    "int8_weight_only": "Int8WeightOnlyConfig",
    "fp8_dynamic": "Float8DynamicActivationFloat8WeightConfig",
}
FP8_CAPABILITY = (8, 9)  # fp8 matmuls: Ada, Hopper and later
# what can be quantized, by name: where the module sits in a pipeline
QUANTIZE_TARGETS = {"unet": "unet", "vae_decoder": "vae.decoder"}


def token_wise(module: Any, fqn: str) -> bool:
    """A linear layer of an attention block (``...attentions.N...``): it multiplies one row per token."""
    return isinstance(module, torch.nn.Linear) and "attentions." in fqn


@dataclass(frozen=True)
class QuantizeParams:
    quantization: str
    quantize_targets: List[str]


class Quantize(Accelerator):
    name = "quantize"
    label = "torchao quantization"
    Params = QuantizeParams
    same_arithmetic = True  # the same multiply-adds in int8 or fp8
    order = 50  # after QKV fusion: the fused weights are the ones quantized
    constants = {"quantization": "QUANTIZATION", "quantize_targets": "QUANTIZE_TARGETS"}

    @classmethod
    def check(cls, params: QuantizeParams, target: Target) -> None:
        fp8 = target.capability is not None and target.capability >= FP8_CAPABILITY
        allowed = [s for s in SCHEMES if fp8 or not s.startswith("fp8")]
        if params.quantization not in allowed:
            why = (
                "" if fp8 else f" on this {'GPU' if target.capability else 'CPU'} (fp8 needs compute capability >= 8.9)"
            )
            raise ConfigError("accel.quantization", params.quantization, " | ".join(allowed) + why)
        names = list(params.quantize_targets)
        if not names or any(n not in QUANTIZE_TARGETS for n in names) or len(set(names)) != len(names):
            raise ConfigError(
                "accel.quantize_targets", names, f"distinct modules of the pipeline among {', '.join(QUANTIZE_TARGETS)}"
            )
        if importlib.util.find_spec("torchao") is None:
            raise ConfigError(
                "accel.quantization",
                params.quantization,
                "a value only with torchao installed (pip install 'accel_bench[gpu]')",
            )

    def __init__(self, params: QuantizeParams, target: Target):
        super().__init__(params, target)
        self.made: Made[tuple[Any, Any]] = Made()  # linear layer -> (its quantized weight, torchao's repr)

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        import torchao.quantization

        scheme = getattr(torchao.quantization, SCHEMES[self.params.quantization])(set_inductor_config=False)

        def quantized(linear: Any) -> tuple[Any, Any]:
            torchao.quantization.quantize_(linear, scheme)
            return linear.weight, linear.__dict__.get("extra_repr")

        self.originals: list[tuple[Any, Any]] = []
        for name in self.params.quantize_targets:
            module = attrgetter(QUANTIZE_TARGETS[name])(pipe)
            for linear in [m for fqn, m in module.named_modules() if token_wise(m, fqn)]:
                self.originals.append((linear, linear.weight))
                weight, description = self.made.get(linear, [linear.weight], lambda: quantized(linear))
                linear.weight = weight
                if description is not None:
                    linear.extra_repr = description

    def remove(self, pipe: Any) -> None:
        # torchao has no inverse; the methods removed after this one (channels_last) need plain weights
        for linear, weight in self.originals:
            linear.weight = weight
            linear.__dict__.pop("extra_repr", None)  # torchao's description of the quantized layer

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        paths = ", ".join(f'"{name}": pipe.{path}' for name, path in QUANTIZE_TARGETS.items())
        schemes = ", ".join(f'"{name}": torchao.quantization.{cls_name}' for name, cls_name in SCHEMES.items())
        return Code(
            imports=("import torchao.quantization",),
            load=(
                "    for name in QUANTIZE_TARGETS:  # torchao: the attention blocks' linear layers in int8 / fp8",
                f"        torchao.quantization.quantize_({{{paths}}}[name], {{{schemes}}}[QUANTIZATION](set_inductor_config=False),",
                '            filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and "attentions." in fqn)',
            ),
        )
