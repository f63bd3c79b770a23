"""torch.compile on the pipeline's modules: the strong baseline production runs, and a method to stack on.

``mode`` is torch.compile's: ``default`` (inductor kernels), ``reduce-overhead`` (and CUDA graphs),
``max-autotune-no-cudagraphs``, ``max-autotune`` (both). Compilation happens on the first calls,
inside the warm-up; the row's ``compile_s`` says what it cost. ``nn.Module.compile`` keeps the
compiled call in the module's own ``__dict__``, so leaving restores the eager module exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping

from ..errors import ConfigError
from .base import Accelerator, Target

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# what can be compiled, by name: the pipeline's modules
COMPILE_TARGETS: dict[str, Callable[[Any], Any]] = {
    "unet": lambda pipe: pipe.unet,
    "vae_decoder": lambda pipe: pipe.vae.decoder,
}


@dataclass(frozen=True)
class CompileParams:
    mode: str
    fullgraph: bool
    compile_targets: List[str]


class Compile(Accelerator):
    name = "compile"
    label = "torch.compile"
    Params = CompileParams

    @classmethod
    def params_from(cls, values: Mapping[str, Any]) -> CompileParams:
        params = super().params_from(values)
        return dataclasses.replace(params, compile_targets=list(params.compile_targets))  # a plain list, as records hold it

    @classmethod
    def check(cls, params: CompileParams, target: Target) -> None:
        if params.mode not in COMPILE_MODES:
            raise ConfigError("accel.mode", params.mode, " | ".join(COMPILE_MODES))
        if params.mode in CUDA_GRAPH_MODES and target.device == "cpu":
            cpu_modes = " | ".join(m for m in COMPILE_MODES if m not in CUDA_GRAPH_MODES)
            raise ConfigError("accel.mode", params.mode, f"{cpu_modes} on a CPU ({params.mode} captures CUDA graphs: it needs a GPU)")
        names = list(params.compile_targets)
        if not names or any(n not in COMPILE_TARGETS for n in names) or len(set(names)) != len(names):
            raise ConfigError("accel.compile_targets", names, f"distinct modules of the pipeline among {', '.join(COMPILE_TARGETS)}")

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        for name in self.params.compile_targets:
            mode = None if self.params.mode == "default" else self.params.mode
            COMPILE_TARGETS[name](pipe).compile(mode=mode, fullgraph=self.params.fullgraph)

    def remove(self, pipe: Any) -> None:
        for name in self.params.compile_targets:
            COMPILE_TARGETS[name](pipe).__dict__.pop("_compiled_call_impl", None)
