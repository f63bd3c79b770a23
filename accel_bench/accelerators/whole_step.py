"""The whole denoising step in one graph: the UNet, classifier-free guidance and the scheduler's step.

With the UNet alone compiled, the host still runs guidance and the scheduler's step between two UNet
graphs: small kernels launched one by one from Python (DPM-Solver++'s and UniPC's multistep updates
many), which pace a fast GPU at small batches. Here each denoising step is one compiled function, in
the CUDA-graph modes one replay.

The schedulers accel_bench runs (DDIM with eta 0, DPM-Solver++, UniPC) compute each next latent as a
fixed linear combination of the first latent and the model outputs so far, with coefficients that
depend on the schedule only. ``LinearSchedule.probe`` finds those coefficients by running a fresh copy
of the pipeline's own diffusers scheduler on unit vectors, one per term, and checks them against that
scheduler on random inputs: the graph computes what the scheduler computes, up to float rounding (in
float32, where the scheduler may round to the latents' dtype at every step). A scheduler that is not
linear there (``clip_sample``, thresholding, eta > 0, an SDE variant) or that scales the UNet's input is
refused. The first latent and the model outputs live in a buffer at a fixed address, the next latent
is written into another (as a static KV cache is), so one CUDA graph serves every step.

The pipeline's own loop still runs around the graph: it calls the UNet (here the whole step), computes
its guidance from the UNet output the graph returns (a few small kernels whose result goes unused) and
calls ``scheduler.step``, which returns the latent the graph wrote.
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

STEP = "step"  # the compile target (``accel.compile_targets``) that captures the whole step


def _step(forward: Callable[..., Any], x, atoms, slot, row, t, guidance: float, cfg: bool, kwargs: dict) -> Any:
    """One denoising step, traced: ``x`` (the latents) and ``atoms`` (first latent, then each step's
    guided model output) are updated in place."""
    out = forward(torch.cat([x, x]) if cfg else x, t, **{**kwargs, "return_dict": False})[0]
    eps = out
    if cfg:
        uncond, text = out.chunk(2)
        eps = uncond + guidance * (text - uncond)  # the pipelines' own guidance, in their order of operations
    atoms.index_copy_(0, slot, eps.unsqueeze(0).to(atoms.dtype))
    x.copy_(torch.tensordot(row, atoms, dims=1))
    return out


def denoise_step(forward: Callable[..., Any], *args: Any) -> Any:
    return _step(forward, *args)


# DeepCache's phases: the same body, each its own code object (dynamo keeps one cache per code object)
def denoise_step_full(forward: Callable[..., Any], *args: Any) -> Any:
    return _step(forward, *args)


def denoise_step_cached(forward: Callable[..., Any], *args: Any) -> Any:
    return _step(forward, *args)


@dataclass(frozen=True)
class LinearSchedule:
    """A schedule's steps as coefficients: after step ``i`` the latents are ``rows[i] . atoms`` with
    ``atoms = [x_0, eps_0, ..., eps_{n-1}]`` (the later terms' coefficients zero)."""

    rows: torch.Tensor  # (n, n + 1), float32
    # (n, 1), int64: step i writes its model output at atoms[i + 1]; on the device, as the rows are, so
    # that no step copies an index from the host
    slots: torch.Tensor

    @property
    def steps(self) -> int:
        return self.rows.shape[0]

    def to(self, device: torch.device) -> "LinearSchedule":
        return LinearSchedule(self.rows.to(device), self.slots.to(device))

    @classmethod
    def probe(cls, scheduler: Any, args: tuple, kwargs: dict) -> "LinearSchedule":
        """Run fresh copies of ``scheduler`` (its class and config) through the schedule that
        ``set_timesteps(*args, **kwargs)`` gives it, on the CPU."""
        fresh = _fresh(scheduler, args, kwargs)
        n = len(fresh.timesteps)
        basis = torch.eye(n + 1, dtype=torch.float64).reshape(n + 1, n + 1, 1, 1)  # term j: coefficients of atom j
        x, rows = basis[0], []
        for i, t in enumerate(fresh.timesteps):
            if not torch.equal(fresh.scale_model_input(basis[i + 1], t), basis[i + 1]):
                raise ValueError(f"{type(scheduler).__name__} scales the UNet's input at step {i}")
            x = fresh.step(basis[i + 1], t, x, return_dict=False)[0]
            rows.append(x.reshape(n + 1))
        schedule = cls(torch.stack(rows).float(), torch.arange(1, n + 1).reshape(n, 1))
        schedule._check(_fresh(scheduler, args, kwargs))
        return schedule

    def _check(self, scheduler: Any) -> None:
        """The coefficients against the scheduler itself, on random latents and model outputs large
        enough to reach any clipping or thresholding."""
        generator = torch.Generator().manual_seed(0)
        atoms = 8 * torch.randn(self.steps + 1, 2, 4, 3, 3, generator=generator)
        x = atoms[0]
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.step(atoms[i + 1], t, x, return_dict=False)[0]
            expected = torch.tensordot(self.rows[i].double(), atoms.double(), dims=1)
            error = (x.double() - expected).abs().max().item()
            if not error <= 1e-4 * max(1.0, expected.abs().max().item()):
                raise ValueError(
                    f"{type(scheduler).__name__}'s step {i} is not a fixed linear map of the latents and the model "
                    f"outputs (off by {error:.3g}: clip_sample, thresholding, eta > 0 or an SDE variant)"
                )


def _fresh(scheduler: Any, args: tuple, kwargs: dict) -> Any:
    fresh = type(scheduler).from_config(scheduler.config)
    bound = inspect.signature(fresh.set_timesteps).bind(*args, **kwargs)
    if "device" in inspect.signature(fresh.set_timesteps).parameters:
        bound.arguments["device"] = "cpu"
    fresh.set_timesteps(*bound.args, **bound.kwargs)
    return fresh


# Buffers at fixed addresses, by shape, dtype, device and step count, kept for the process: a graph
# guards on its static inputs, so every application of the method must pass it the same ones.
_BUFFERS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _buffers(x0: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    key = (tuple(x0.shape), x0.dtype, str(x0.device), steps)
    if key not in _BUFFERS:
        x = torch.empty_like(x0)
        atoms = torch.empty((steps + 1, *x0.shape), dtype=torch.float32, device=x0.device)
        for tensor in (x, atoms):
            torch._dynamo.mark_static_address(tensor)
        _BUFFERS[key] = (x, atoms)
    return _BUFFERS[key]


class WholeStep:
    """Runs each UNet call of the pipeline's loop as the whole step, and answers the loop's
    ``scheduler.step`` with the latents it wrote. Installed on the pipeline's scheduler object
    (``set_timesteps`` and ``step``); ``remove`` takes them off."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.scheduler = pipe.scheduler
        self.schedules: dict[str, LinearSchedule] = {}
        self.schedule: Optional[LinearSchedule] = None
        self.index = 0
        self.stepped = True  # the last UNet call's step was taken by the loop
        self.x: Optional[torch.Tensor] = None
        self.atoms: Optional[torch.Tensor] = None
        real_set_timesteps, real_step = self.scheduler.set_timesteps, self.scheduler.step

        @functools.wraps(real_set_timesteps)  # the pipelines read these signatures
        def set_timesteps(*args: Any, **kwargs: Any) -> None:
            self.set_timesteps(real_set_timesteps, *args, **kwargs)

        @functools.wraps(real_step)
        def step(*args: Any, **kwargs: Any) -> Any:
            return self.step(*args, **kwargs)

        self.scheduler.set_timesteps, self.scheduler.step = set_timesteps, step

    def set_timesteps(self, real: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        device = kwargs.get("device") or self.scheduler.timesteps.device
        key = json.dumps([args, {k: v for k, v in sorted(kwargs.items()) if k != "device"}, str(device)], default=str)
        if key not in self.schedules:
            try:
                probed = LinearSchedule.probe(self.scheduler, args, kwargs)
            except ValueError as error:
                raise RuntimeError(f"whole-step capture (accel.compile_targets: {STEP}): {error}") from None
            self.schedules[key] = probed.to(torch.device(device))
        self.schedule, self.index, self.stepped = self.schedules[key], 0, True

    def __call__(self, compiled: Callable[..., Any], forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """The UNet call ``forward(*args, **kwargs)`` of step ``self.index``, run as the whole step."""
        sample, t, *rest = args
        schedule = self.schedule
        if schedule is None or self.index >= schedule.steps or not self.stepped:
            raise RuntimeError(
                "whole-step capture: the sampling loop must call set_timesteps, then the UNet and the "
                "scheduler's step once per step (the pipelines' own loops do)"
            )
        if rest or getattr(self.pipe, "guidance_rescale", 0.0) > 0:
            raise RuntimeError(
                "whole-step capture: the UNet called with extra positional arguments or guidance_rescale > 0"
            )
        if self.index == 0:
            cfg = self.pipe.do_classifier_free_guidance
            x0 = sample.chunk(2)[0] if cfg else sample
            self.x, self.atoms = _buffers(x0, schedule.steps)
            self.atoms.zero_()
            self.atoms[0].copy_(x0)
            self.x.copy_(x0)
        assert self.x is not None and self.atoms is not None
        cfg = sample.shape[0] == 2 * self.x.shape[0]  # a loop may stop guiding partway (its batch halves)
        out = compiled(
            forward,
            self.x,
            self.atoms,
            schedule.slots[self.index],
            schedule.rows[self.index],
            t,
            float(self.pipe.guidance_scale),
            cfg,
            {k: v for k, v in kwargs.items() if k != "return_dict"},
        )
        self.stepped = False
        if kwargs.get("return_dict", True):
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)

    def step(self, model_output: Any, timestep: Any, sample: Any, *args: Any, **kwargs: Any) -> Any:
        x = self.x
        if self.stepped or x is None or sample.shape != x.shape or (self.index > 0 and sample is not x):
            raise RuntimeError(
                "whole-step capture: the scheduler's step came without the UNet call before it, or on latents "
                "other than those the last step wrote (a callback that changes them is not captured)"
            )
        if kwargs.get("eta", 0.0) or kwargs.get("variance_noise") is not None:
            raise RuntimeError(
                "whole-step capture: the scheduler's step with eta > 0 or noise is not a fixed linear map"
            )
        self.index += 1
        self.stepped = True
        if kwargs.get("return_dict", True):
            from diffusers.schedulers.scheduling_utils import SchedulerOutput

            return SchedulerOutput(prev_sample=self.x)
        return (self.x,)

    def remove(self) -> None:
        for name in ("set_timesteps", "step"):
            self.scheduler.__dict__.pop(name, None)
