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

# Constant names in a generated file, per accelerator parameter that a file passes on.
PARAM_CONSTANTS = {
    "cache_interval": "CACHE_INTERVAL",
    "cache_branch_id": "CACHE_BRANCH_ID",
    "ratio": "RATIO",
    "max_downsample": "MAX_DOWNSAMPLE",
    "sx": "SX",
    "sy": "SY",
    "use_rand": "USE_RAND",
    "gate_step": "GATE_STEP",
    "sp_interval": "SP_INTERVAL",
    "fi_interval": "FI_INTERVAL",
    "warm_up": "WARM_UP",
    "mode": "COMPILE_MODE",
    "fullgraph": "FULLGRAPH",
    "compile_targets": "COMPILE_TARGETS",
}
# where each compile target lives in a pipeline (accelerators.compile.COMPILE_TARGETS)
_COMPILE_PATHS = {"unet": "pipe.unet", "vae_decoder": "pipe.vae.decoder"}
_TGATE_LOADERS = {
    ("sd", False): "TgateSDLoader",
    ("sd", True): "TgateSDDeepCacheLoader",
    ("sdxl", False): "TgateSDXLLoader",
    ("sdxl", True): "TgateSDXLDeepCacheLoader",
}


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
        for key, name in PARAM_CONSTANTS.items():
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
    methods = list(spec.methods)
    deepcache, tome, tgate = ("deepcache" in methods), ("tome" in methods), ("tgate" in methods)

    imports = ["import torch", f"from diffusers import {pipeline_class}, {spec.scheduler_class}"]
    if deepcache and not tgate:
        imports.append("from DeepCache import DeepCacheSDHelper")
    if tome:
        imports.append("import tomesd")
    if tgate:
        imports.append(f"from tgate import {_TGATE_LOADERS[(spec.family, deepcache)]}")

    constants = "\n".join(f"{name} = {_literal(value)}" for name, value in spec.constants.items())

    extra = ", safety_checker=None, requires_safety_checker=False" if spec.family == "sd" else ""
    kwargs = "".join(f", {k}={_literal(v)}" for k, v in sorted(spec.scheduler_kwargs.items()))
    load = [
        f"    pipe = {pipeline_class}.from_pretrained(model_id, dtype=dtype{extra})",
        f"    pipe.scheduler = {spec.scheduler_class}.from_config(pipe.scheduler.config{kwargs})",
        "    pipe = pipe.to(device)",
        "    pipe.set_progress_bar_config(disable=True)",
    ]
    if tome:
        load.append("    tomesd.apply_patch(pipe, ratio=RATIO, max_downsample=MAX_DOWNSAMPLE, sx=SX, sy=SY, use_rand=USE_RAND)")
    if deepcache and not tgate:
        load += [
            "    pipe.deepcache = DeepCacheSDHelper(pipe=pipe)",
            "    pipe.deepcache.set_params(cache_interval=CACHE_INTERVAL, cache_branch_id=CACHE_BRANCH_ID)",
            "    pipe.deepcache.enable()",
        ]
    if tgate:
        loader = _TGATE_LOADERS[(spec.family, deepcache)]
        args = ", cache_interval=CACHE_INTERVAL, cache_branch_id=CACHE_BRANCH_ID" if deepcache else ""
        load.append(f"    pipe = {loader}(pipe{args})  # adds pipe.tgate{'; enables DeepCache' if deepcache else ''}")
    if "compile" in methods:
        paths = ", ".join(f'"{name}": {path}' for name, path in _COMPILE_PATHS.items())
        load += [
            "    for name in COMPILE_TARGETS:  # torch.compile: it compiles on the first calls",
            f"        {{{paths}}}[name].compile(mode=None if COMPILE_MODE == \"default\" else COMPILE_MODE, fullgraph=FULLGRAPH)",
        ]
    load.append("    return pipe")

    call = "pipe.tgate" if tgate else "pipe"
    gate = ",\n        gate_step=GATE_STEP,\n        sp_interval=SP_INTERVAL,\n        fi_interval=FI_INTERVAL,\n        warm_up=WARM_UP" if tgate else ""
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
