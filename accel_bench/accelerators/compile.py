"""torch.compile on the pipeline's modules: the strong baseline production runs, and a method to stack on.

``mode`` is torch.compile's: ``default`` (inductor kernels), ``reduce-overhead`` (and CUDA graphs),
``max-autotune-no-cudagraphs``, ``max-autotune`` (both). Compilation happens on the first calls,
inside the warm-up; the row's ``compile_s`` says what it cost. ``nn.Module.compile`` keeps the
compiled call in the module's own ``__dict__``, so leaving restores the eager module exactly.
With DeepCache on, the UNet's full and cached steps are compiled as two graphs (``cached_steps``).
The target ``step`` compiles the whole denoising step instead of the UNet: UNet, guidance and the
scheduler's step in one graph (``whole_step``). A compiled SDXL VAE decoder in fp16 is upcast at every
decode to the same fp32 weights, not to new ones (``vae_upcast``).
A method that makes dynamo recompile past its limit fails the run instead of falling back to eager
in silence (dynamo's default), and in the CUDA-graph modes so does a graph inductor would run
uncaptured: a compiled row is compiled and captured, or it says why not.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Callable, List, Mapping, Optional, Sequence

import torch

from ..errors import ConfigError
from .base import Accelerator, Code, Target
from .cached_steps import CompiledCachedSteps
from .vae_upcast import CODE as UPCAST_CODE
from .vae_upcast import HeldUpcast, upcasts
from .whole_step import STEP, WholeStep, denoise_step

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# what can be compiled, by name: where the module sits in a pipeline
COMPILE_TARGETS: dict[str, str] = {"unet": "unet", "vae_decoder": "vae.decoder"}
# the targets ``accel.compile_targets`` accepts: the modules, or the whole step (its UNet included) for the UNet
TARGETS = (*COMPILE_TARGETS, STEP)


def _module(pipe: Any, name: str) -> Any:
    return attrgetter(COMPILE_TARGETS[name])(pipe)


def _on_host(steps: Sequence[Callable[[tuple, dict], None]], compiled: Callable[..., Any]) -> Callable[..., Any]:
    """``compiled`` after the methods' host steps (``Accelerator.graph_safe``), outside its graph."""
    if not steps:
        return compiled

    @functools.wraps(compiled)
    def call(*args: Any, **kwargs: Any) -> Any:
        for step in steps:
            step(args, kwargs)
        return compiled(*args, **kwargs)

    return call


class RecompileLimit(logging.Handler):
    """While a method is compiled: dynamo's recompile limit fails the call (its default is to run
    eager from there on, in silence), and the failure names what dynamo logged: the function it
    kept recompiling and the last guard that failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.hit: Optional[str] = None

    def __enter__(self) -> "RecompileLimit":
        import torch._dynamo

        self.was = torch._dynamo.config.fail_on_recompile_limit_hit
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        logging.getLogger("torch._dynamo.convert_frame").addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch._dynamo

        torch._dynamo.config.fail_on_recompile_limit_hit = self.was
        logging.getLogger("torch._dynamo.convert_frame").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if "hit config." in str(record.msg):
            limit, value, function, reason = tuple(record.args or ())[:4]  # type: ignore[arg-type]
            guard = " ".join(str(reason).strip().splitlines()[0].split())[:240] if str(reason).strip() else "not given"
            self.hit = f"dynamo recompiled {function} past its {limit} ({value}; last guard failed: {guard})"

    def explained(self, compiled: Callable[..., Any]) -> Callable[..., Any]:
        from torch._dynamo.exc import FailOnRecompileLimitHit

        @functools.wraps(compiled)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return compiled(*args, **kwargs)
            except FailOnRecompileLimitHit as error:
                raise RuntimeError(
                    f"torch.compile: {self.hit or error}: the method's Python changes under the graph at every "
                    "call, and dynamo would run it eager from here on"
                ) from error

        return call


class CapturedOrFailed:
    """In the CUDA-graph modes: a graph inductor would run without capturing it (a CPU tensor among its
    inputs, a mutation it cannot replay, re-recording past its limit) fails the call with inductor's
    reason, where inductor would run it uncaptured and the row would pass for a CUDA-graph one."""

    def __enter__(self) -> "CapturedOrFailed":
        import torch._inductor.config

        self.was = torch._inductor.config.triton.cudagraph_or_error
        torch._inductor.config.triton.cudagraph_or_error = True
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch._inductor.config

        torch._inductor.config.triton.cudagraph_or_error = self.was


@dataclass(frozen=True)
class CompileParams:
    mode: str
    fullgraph: bool
    compile_targets: List[str]


class Compile(Accelerator):
    name = "compile"
    label = "torch.compile"
    Params = CompileParams
    compiles = True
    same_arithmetic = True
    order = 100  # last: it compiles the modules as the other methods left them
    constants = {"mode": "COMPILE_MODE", "fullgraph": "FULLGRAPH", "compile_targets": "COMPILE_TARGETS"}

    @classmethod
    def check(cls, params: CompileParams, target: Target) -> None:
        if params.mode not in COMPILE_MODES:
            raise ConfigError("accel.mode", params.mode, " | ".join(COMPILE_MODES))
        if params.mode in CUDA_GRAPH_MODES and target.device == "cpu":
            cpu_modes = " | ".join(m for m in COMPILE_MODES if m not in CUDA_GRAPH_MODES)
            raise ConfigError(
                "accel.mode", params.mode, f"{cpu_modes} on a CPU ({params.mode} captures CUDA graphs: it needs a GPU)"
            )
        names = list(params.compile_targets)
        if (
            not names
            or any(n not in TARGETS for n in names)
            or len(set(names)) != len(names)
            or {"unet", STEP} <= set(names)
        ):
            raise ConfigError(
                "accel.compile_targets",
                names,
                f"distinct targets among {', '.join(TARGETS)}, with unet or {STEP}, not both "
                f"({STEP}: the whole denoising step, its UNet included)",
            )

    def __init__(self, params: CompileParams, target: Target):
        super().__init__(params, target)
        self.upcast = HeldUpcast()

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        targets = self.params.compile_targets
        self.upcast_held = "vae_decoder" in targets and upcasts(pipe, self.target.family)
        if self.upcast_held:
            self.upcast.hold(pipe)
        deepcache = active.get("deepcache")
        unet = next((name for name in targets if name in ("unet", STEP)), None)
        self.limit = RecompileLimit().__enter__()
        # dynamic=False: one graph per shape, as a deployment compiled for its batch size has
        options = dict(
            mode=None if self.params.mode == "default" else self.params.mode,
            fullgraph=self.params.fullgraph,
            dynamic=False,
        )
        cuda_graphs = self.params.mode in CUDA_GRAPH_MODES
        self.captured = CapturedOrFailed().__enter__() if cuda_graphs else None
        host_steps: list[Callable[[tuple, dict], None]] = []
        if unet is not None:
            host_steps = [step for step in (m.graph_safe(pipe) for m in active.values()) if step is not None]
        self.whole_step = WholeStep(pipe) if unet == STEP else None
        self.cached_steps: Optional[CompiledCachedSteps] = None
        if deepcache is not None and unet is not None:
            self.cached_steps = CompiledCachedSteps(
                pipe,
                deepcache.helper,
                options,
                cuda_graphs=cuda_graphs,
                wrap=self.limit.explained,
                host_steps=host_steps,
                whole_step=self.whole_step,
            )
        elif self.whole_step is not None:
            compiled = self.limit.explained(torch.compile(denoise_step, **options))
            pipe.unet._compiled_call_impl = _on_host(host_steps, self._stepper(compiled, pipe.unet._call_impl))
        for name in targets:
            if name == STEP or (name == "unet" and self.cached_steps is not None):
                continue  # compiled above
            module = _module(pipe, name)
            module.compile(**options)
            compiled = self.limit.explained(module._compiled_call_impl)
            module._compiled_call_impl = _on_host(host_steps, compiled) if name == "unet" else compiled

    def _stepper(self, compiled: Callable[..., Any], forward: Callable[..., Any]) -> Callable[..., Any]:
        """The UNet's call as the whole step; in the CUDA-graph modes each step a new generation of the
        graph tree (the step's state lives in static buffers, not in the graphs' outputs)."""
        whole, cuda_graphs = self.whole_step, self.params.mode in CUDA_GRAPH_MODES
        assert whole is not None

        def call(*args: Any, **kwargs: Any) -> Any:
            if cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            return whole(compiled, forward, args, kwargs)

        return call

    def remove(self, pipe: Any) -> None:
        self.limit.__exit__(None, None, None)
        if self.captured is not None:
            self.captured.__exit__(None, None, None)
        if self.cached_steps is not None:
            self.cached_steps.remove()
        if self.whole_step is not None:
            self.whole_step.remove()
        for name in self.params.compile_targets:
            _module(pipe, "unet" if name == STEP else name).__dict__.pop("_compiled_call_impl", None)
        if self.upcast_held:
            self.upcast.release(pipe)

    def warmup_needed(self) -> tuple[int, str]:
        # compilation runs on the first call, CUDA graphs are captured on the next ones: never inside a timed batch
        least = 3 if self.params.mode in CUDA_GRAPH_MODES else 1
        return (
            least,
            f"with torch.compile's {self.params.mode} mode (torch.compile works on the first calls, outside the timed batches)",
        )

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        paths = ", ".join(f'"{name}": pipe.{path}' for name, path in COMPILE_TARGETS.items())
        return Code(
            load=(
                "    for name in COMPILE_TARGETS:  # torch.compile: it compiles on the first calls",
                f'        {{{paths}}}[name].compile(mode=None if COMPILE_MODE == "default" else COMPILE_MODE, fullgraph=FULLGRAPH)',
                *(UPCAST_CODE if family == "sdxl" else ()),
            )
        )

    @classmethod
    def no_code(cls, methods: Sequence[str], params: Mapping[str, Any]) -> Optional[str]:
        if STEP in params.get("compile_targets", []):
            return "the whole denoising step runs as accel_bench's own graph (accelerators/whole_step.py), which generated code does not carry"
        if "deepcache" in methods and "unet" in params.get("compile_targets", []):
            return "DeepCache on a compiled UNet runs as two graphs (accelerators/cached_steps.py), which generated code does not carry"
        return None

    def reset(self, pipe: Any, seed: int) -> None:
        if self.params.mode in CUDA_GRAPH_MODES:
            # a pipeline call is a new generation of the graph tree: nothing the last call's graphs
            # left in their pool (a method's caches, which the methods' own resets clear) is read again
            torch.compiler.cudagraph_mark_step_begin()
        if self.cached_steps is not None:
            self.cached_steps.reset()
