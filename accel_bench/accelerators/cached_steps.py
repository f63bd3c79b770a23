"""DeepCache on a compiled UNet: the full step and the cached step as two graphs, each compiled once.

DeepCache decides in Python, at every block of every UNet call, whether the block runs or returns
the features cached at the last full step. torch.compile traces those decisions (and DeepCache's
step counter) into the graph and guards on them, so a UNet compiled under DeepCache recompiles at
every step until dynamo gives up (no faster than eager DeepCache). Here the decision is
taken once per UNet call, outside the graph: the full step and the cached step are two compiled
functions, each traced with DeepCache's own ``is_skip_step`` answers for its phase held fixed. In
the CUDA-graph modes each is captured once; the features the full step caches stay in the graph
pool at fixed addresses, which the cached step's graph reads. With the whole step compiled
(``whole_step``), each phase's graph is the whole denoising step around the phase's UNet.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence

import torch

from .whole_step import WholeStep, denoise_step_cached, denoise_step_full

FULL, CACHED = "full", "cached"


def _full_step(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return forward(*args, **kwargs)


def _cached_step(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # the same body as _full_step, but its own code object: dynamo keeps one cache per code object
    return forward(*args, **kwargs)


def _fixed_answers(helper: Any, phase: str) -> Callable[..., bool]:
    """DeepCache's ``is_skip_step`` for every wrapped block, answered ahead for a full step
    (step 0 of an interval) or a cached step (step 1), as a constant table dynamo folds away."""
    probe = SimpleNamespace(params=helper.params, cur_timestep=0 if phase == FULL else 1, start_timestep=0)
    decide = type(helper).is_skip_step
    answers = {
        (blocktype, block_i, layer_i): decide(probe, block_i, layer_i, blocktype)
        for key in helper.function_dict
        if isinstance(key, tuple)
        for blocktype, _, block_i, layer_i in [key]
    }

    def is_skip_step(block_i: int, layer_i: int, blocktype: str = "down") -> bool:
        return answers[(blocktype, block_i, layer_i)]

    return is_skip_step


def _nothing() -> None:
    pass


class CompiledCachedSteps:
    """Installed as ``unet.forward`` over DeepCache's own wrapper (whose ``.item()`` per call would
    sync, and break a CUDA graph); ``reset`` starts a pipeline call at a full step."""

    def __init__(
        self,
        pipe: Any,
        helper: Any,
        options: dict[str, Any],
        cuda_graphs: bool,
        wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
        host_steps: Sequence[Callable[[tuple, dict], None]] = (),
        whole_step: Optional[WholeStep] = None,
    ):
        self.pipe, self.helper = pipe, helper
        self.deepcache_forward = pipe.unet.__dict__["forward"]  # DeepCache's wrapper, put back by remove
        self.unet_forward = helper.function_dict["unet_forward"]  # the UNet's own forward
        self.answers = {phase: _fixed_answers(helper, phase) for phase in (FULL, CACHED)}
        full, cached = (
            (denoise_step_full, denoise_step_cached) if whole_step is not None else (_full_step, _cached_step)
        )
        self.steps = {FULL: wrap(torch.compile(full, **options)), CACHED: wrap(torch.compile(cached, **options))}
        self.whole_step = whole_step
        self.cuda_graphs = cuda_graphs
        self.host_steps = host_steps  # the other methods' per-call host work (``Accelerator.graph_safe``)
        self.calls = 0
        self.origin = 0  # the call DeepCache's interval counts from
        pipe.unet.forward = self.forward
        # A sampling loop that restarts DeepCache mid-call (tgate's, at its gate, as its batch halves)
        # disables and enables the helper: eagerly that re-wraps every block (new wrappers, a retrace
        # here) and counts the interval anew from the next call, a full step. Here only the count restarts.
        helper.disable = _nothing
        helper.enable = self.restart

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # DeepCache counts a step by its timestep's index in the schedule; the schedulers accel_bench
        # runs call the UNet once per step, so the call count since the pipeline call began is that index
        steps = len(self.pipe.scheduler.timesteps)
        if self.calls >= steps:
            raise RuntimeError(
                f"DeepCache on a compiled UNet: UNet call {self.calls + 1} of a {steps}-step schedule; "
                "it needs a scheduler that calls the UNet once per step"
            )
        phase = FULL if (self.calls - self.origin) % self.helper.params["cache_interval"] == 0 else CACHED
        self.calls += 1
        self.helper.is_skip_step = self.answers[phase]
        if phase == FULL and self.cuda_graphs:
            # a new generation of the graph tree: the features cached by the last full step are
            # replaced, never read again, so the full step's graph may overwrite them in place
            torch.compiler.cudagraph_mark_step_begin()
        for step in self.host_steps:
            step(args, kwargs)
        if self.whole_step is not None:
            return self.whole_step(self.steps[phase], self.unet_forward, args, kwargs)
        return self.steps[phase](self.unet_forward, *args, **kwargs)

    def restart(self) -> None:
        """DeepCache's ``disable()`` + ``enable()`` mid-call: the next UNet call is a full step and the
        interval counts from it."""
        self.origin = self.calls

    def reset(self) -> None:
        self.calls = self.origin = 0

    def remove(self) -> None:
        self.pipe.unet.forward = self.deepcache_forward
        for name in ("is_skip_step", "enable", "disable"):
            self.helper.__dict__.pop(name, None)
