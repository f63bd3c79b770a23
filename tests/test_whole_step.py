"""The scheduler's step as the linear map the whole-step graph computes: probed from diffusers' own
schedulers, equal to them, refused where a scheduler is not linear; and the loop contract around it."""

from __future__ import annotations

from types import SimpleNamespace

import diffusers
import pytest
import torch

from accel_bench.accelerators import baseline_methods, baseline_name, no_code
from accel_bench.accelerators.base import Target
from accel_bench.accelerators.whole_step import LinearSchedule, WholeStep
from accel_bench.errors import ConfigError
from accel_bench.pipelines import architecture_config

SCHEDULERS = [
    ("DDIMScheduler", {}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    ("UniPCMultistepScheduler", {}),
]


def scheduler(architecture, class_name, **kwargs):
    return getattr(diffusers, class_name).from_config(architecture_config(architecture, "scheduler"), **kwargs)


@pytest.mark.parametrize("architecture", ["sd15", "sd21", "sdxl"])  # sd21: v-prediction
@pytest.mark.parametrize(("class_name", "kwargs"), SCHEDULERS)
@pytest.mark.parametrize("steps", [7, 25])
def test_the_probed_map_is_the_schedulers_step(architecture, class_name, kwargs, steps):
    probed = LinearSchedule.probe(scheduler(architecture, class_name, **kwargs), (steps,), {"device": "cpu"})
    assert probed.rows.shape == (steps, steps + 1) and probed.slots.flatten().tolist() == list(range(1, steps + 1))
    assert probed.rows.triu(2).abs().max() == 0  # step i reads nothing after its own model output
    real = scheduler(architecture, class_name, **kwargs)
    real.set_timesteps(steps)
    atoms = torch.randn(steps + 1, 2, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = atoms[0]
    for i, t in enumerate(real.timesteps):
        x = real.step(atoms[i + 1], t, x, return_dict=False)[0]
        torch.testing.assert_close(torch.tensordot(probed.rows[i].double(), atoms, dims=1), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("class_name", "kwargs", "why"),
    [
        ("DDIMScheduler", {"clip_sample": True}, "not a fixed linear map"),
        ("DDIMScheduler", {"thresholding": True}, "not a fixed linear map"),
        ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "not a fixed linear map"),
        ("EulerDiscreteScheduler", {}, "scales the UNet's input"),
    ],
)
def test_a_scheduler_that_is_not_linear_is_refused(class_name, kwargs, why):
    with pytest.raises(ValueError, match=why):
        LinearSchedule.probe(scheduler("sd15", class_name, **kwargs), (10,), {})


class Loop:
    """A pipeline as the whole step sees one: its scheduler and guidance."""

    def __init__(self):
        self.scheduler = scheduler("sd15", "DDIMScheduler")
        self.do_classifier_free_guidance, self.guidance_scale = True, 7.5


def test_the_loop_must_call_the_unet_then_the_step_on_the_latents_it_was_given():
    pipe = Loop()
    whole = WholeStep(pipe)
    unet_output = torch.zeros(4, 4, 2, 2)

    def compiled(forward, x, atoms, slot, row, t, guidance, cfg, kwargs):
        assert cfg and guidance == 7.5 and kwargs == {"encoder_hidden_states": None}
        x.mul_(0.5)
        return unet_output

    def call():
        return whole(compiled, None, (torch.ones(4, 4, 2, 2), torch.tensor(1)), {"encoder_hidden_states": None})

    with pytest.raises(RuntimeError, match="set_timesteps, then the UNet"):
        call()
    pipe.scheduler.set_timesteps(3, device="cpu")
    with pytest.raises(RuntimeError, match="came without the UNet call"):
        pipe.scheduler.step(unet_output, 1, torch.ones(2, 4, 2, 2))
    assert call().sample is unet_output
    latents = pipe.scheduler.step(unet_output, 1, torch.ones(2, 4, 2, 2), return_dict=False)[0]
    assert latents.shape == (2, 4, 2, 2) and latents.max() == 0.5  # what the graph wrote
    call()
    with pytest.raises(RuntimeError, match="latents other than"):
        pipe.scheduler.step(unet_output, 1, latents.clone())
    with pytest.raises(RuntimeError, match="eta > 0"):
        pipe.scheduler.step(unet_output, 1, latents, eta=0.5)
    pipe.scheduler.step(unet_output, 1, latents)
    call()
    pipe.scheduler.step(unet_output, 1, latents)
    with pytest.raises(RuntimeError, match="set_timesteps, then the UNet"):
        call()  # a fourth step of a three-step schedule
    whole.remove()
    assert "step" not in pipe.scheduler.__dict__ and "set_timesteps" not in pipe.scheduler.__dict__


def test_the_baseline_compiles_the_step_where_it_compiles_the_unet():
    gpu = Target(pipeline="sd15", family="sd", down_blocks=4, steps=20, device="cuda", capability=(9, 0))
    compiled = dict(compile="reduce-overhead", recipe="none", whole_step=True)
    (method,) = baseline_methods(compiled, gpu)
    assert method.params.compile_targets == ["step"] and baseline_name(compiled) == "compile:reduce-overhead:step"
    recipe = dict(
        name="fast",
        methods=["fused_qkv", "compile"],
        mode="max-autotune",
        fullgraph=True,
        compile_targets=["unet", "vae_decoder"],
    )
    fast = dict(compile="none", recipe="fast", whole_step=True)
    recipe = {**{key: None for key in ("quantization", "quantize_targets", "sdpa_backend")}, **recipe}
    assert baseline_methods(fast, gpu, recipe)[-1].params.compile_targets == ["step", "vae_decoder"]
    assert baseline_name(fast) == "fast:step" and baseline_name({**fast, "whole_step": False}) == "fast"
    with pytest.raises(ConfigError, match="baseline.whole_step"):
        baseline_methods(dict(compile="none", recipe="none", whole_step=True), gpu)


def test_generated_code_does_not_claim_the_whole_step():
    assert "whole_step.py" in no_code(["compile"], {"compile_targets": ["step"]})
    assert no_code(["compile"], {"compile_targets": ["unet"]}) is None


def test_the_schedule_follows_set_timesteps_and_is_probed_once_per_schedule(monkeypatch):
    pipe = SimpleNamespace(scheduler=scheduler("sd15", "UniPCMultistepScheduler"))
    whole = WholeStep(pipe)
    probes = []
    real = LinearSchedule.probe.__func__
    monkeypatch.setattr(LinearSchedule, "probe", classmethod(lambda cls, *a: probes.append(a) or real(cls, *a)))
    for steps in (4, 6, 4, 6):
        pipe.scheduler.set_timesteps(steps, device="cpu")
        assert whole.schedule.steps == steps and len(pipe.scheduler.timesteps) == steps
    assert len(probes) == 2
