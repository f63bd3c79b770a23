"""Standalone ground-truth code: diffusers plus the accelerator packages, no accel_bench import.

Every value in a file comes from its typed entry and the config tree (model id, pipeline family,
scheduler kwargs, the accel's methods); nothing is recovered from text.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..accelerators import METHODS


@dataclass(frozen=True)
class CodeSpec:
    """What a generated file does: the pipeline, its sampler, its accelerators and their values."""

    model_id: str  # a hub id, or a folder (relative: to where the file is run, the dataset's root)
    family: str  # sd | sdxl
    scheduler_class: str
    scheduler_kwargs: Mapping[str, Any]
    steps: int
    resolution: int
    guidance_scale: float
    methods: Sequence[str]  # in application order; empty for a baseline
    params: Mapping[str, Any]

    @property
    def constants(self) -> dict[str, Any]:
        """The module-level constants a file defines, name -> value (checked after generation)."""
        values = {
            "MODEL_ID": self.model_id,
            "SCHEDULER": self.scheduler_class,
            "NUM_INFERENCE_STEPS": self.steps,
            "RESOLUTION": self.resolution,
            "GUIDANCE_SCALE": self.guidance_scale,
        }
        for method in (m for m in METHODS if m in self.methods):
            for key, name in METHODS[method].constants.items():
                if key in self.params:
                    values[name] = self.params[key]
        return values


def describe_methods(methods: Sequence[str], params: Mapping[str, Any]) -> str:
    """``DeepCache (cache_interval=3, cache_branch_id=0) and ToMe (ratio=0.5, ...)``."""
    parts = []
    for name in methods:
        keys = [f.name for f in dataclasses.fields(METHODS[name].Params) if f.name in params]
        values = ", ".join(f"{k}={params[k]}" for k in keys)
        parts.append(f"{METHODS[name].label} ({values})")
    return " and ".join(parts)


def _literal(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def generate_code(spec: CodeSpec, docstring: str) -> str:
    pipeline_class = "StableDiffusionXLPipeline" if spec.family == "sdxl" else "StableDiffusionPipeline"
    methods = [name for name in METHODS if name in spec.methods]
    parts = [METHODS[name].code(spec.family, methods) for name in methods]

    imports = ["import torch", f"from diffusers import {pipeline_class}, {spec.scheduler_class}"]
    imports += [line for part in parts for line in part.imports]

    constants = "\n".join(f"{name} = {_literal(value)}" for name, value in spec.constants.items())

    extra = ", safety_checker=None, requires_safety_checker=False" if spec.family == "sd" else ""
    kwargs = "".join(f", {k}={_literal(v)}" for k, v in sorted(spec.scheduler_kwargs.items()))
    load = [
        f"    pipe = {pipeline_class}.from_pretrained(model_id, dtype=dtype{extra})",
        f"    pipe.scheduler = {spec.scheduler_class}.from_config(pipe.scheduler.config{kwargs})",
        "    pipe = pipe.to(device)",
        "    pipe.set_progress_bar_config(disable=True)",
    ]
    load += [line for part in parts for line in part.patch]
    load += [line for part in parts for line in part.load]
    load.append("    return pipe")

    call = next((part.call for part in parts if part.call), "pipe")
    gate = "".join(f",\n        {kwarg}" for part in parts for kwarg in part.call_kwargs)
    return f'''"""{docstring}
"""

{chr(10).join(imports)}

{constants}


def load_pipeline(model_id=MODEL_ID, device="cuda", dtype=torch.float16):
{chr(10).join(load)}


def inference(pipe, prompts, generator=None):
    """Images for ``prompts`` (one batch); ``generator``: one torch.Generator or one per prompt."""
    return {call}(
        prompt=list(prompts),
        num_inference_steps=NUM_INFERENCE_STEPS,
        guidance_scale=GUIDANCE_SCALE,
        height=RESOLUTION,
        width=RESOLUTION,
        generator=generator{gate},
    ).images


if __name__ == "__main__":
    on_gpu = torch.cuda.is_available()
    pipe = load_pipeline(device="cuda" if on_gpu else "cpu", dtype=torch.float16 if on_gpu else torch.float32)
    images = inference(pipe, ["a red fox curled up asleep in fresh snow at dawn"], torch.Generator("cpu").manual_seed(0))
    images[0].save("sample.png")
    print("wrote sample.png")
'''
