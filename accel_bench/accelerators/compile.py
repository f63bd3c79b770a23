"""torch.compile on the pipeline's modules: the strong baseline production runs, and a method to stack on.

``mode`` is torch.compile's: ``default`` (inductor kernels), ``reduce-overhead`` (and CUDA graphs),
``max-autotune-no-cudagraphs``, ``max-autotune`` (both). Compilation happens on the first calls,
inside the warm-up; the row's ``compile_s`` says what it cost. ``nn.Module.compile`` keeps the
compiled call in the module's own ``__dict__``, so leaving restores the eager module exactly.
With DeepCache on, the UNet's full and cached steps are compiled as two graphs (``cached_steps``).
A method that makes dynamo recompile past its limit fails the run instead of falling back to eager
in silence (dynamo's default): a compiled row is compiled, or it says why not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional

from ..errors import ConfigError
from .base import Accelerator, Target
from .cached_steps import CompiledCachedSteps

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
        import torch._dynamo

        deepcache = active.get("deepcache")
        stacked = deepcache is not None and "unet" in self.params.compile_targets
        if stacked and "tgate" in active:
            raise RuntimeError("torch.compile with DeepCache and T-GATE together is not supported: T-GATE's sampling "
                               "loop re-wraps DeepCache's helper at the gate step, under the compiled steps")
        self.fail_on_limit = torch._dynamo.config.fail_on_recompile_limit_hit
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        self.cached_steps: Optional[CompiledCachedSteps] = None
        if stacked:
            self.cached_steps = CompiledCachedSteps(pipe, deepcache.helper, self.params.mode, self.params.fullgraph,
                                                    cuda_graphs=self.params.mode in CUDA_GRAPH_MODES)
        for name in self.params.compile_targets:
            if name == "unet" and self.cached_steps is not None:
                continue
            mode = None if self.params.mode == "default" else self.params.mode
            # dynamic=False: one graph per shape, as a deployment compiled for its batch size has
            COMPILE_TARGETS[name](pipe).compile(mode=mode, fullgraph=self.params.fullgraph, dynamic=False)

    def remove(self, pipe: Any) -> None:
        import torch._dynamo

        torch._dynamo.config.fail_on_recompile_limit_hit = self.fail_on_limit
        if self.cached_steps is not None:
            self.cached_steps.remove()
        for name in self.params.compile_targets:
            COMPILE_TARGETS[name](pipe).__dict__.pop("_compiled_call_impl", None)

    def reset(self, pipe: Any, seed: int) -> None:
        if self.cached_steps is not None:
            self.cached_steps.reset()
