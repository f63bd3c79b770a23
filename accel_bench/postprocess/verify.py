"""Every generated file is run before it is shipped: on the tiny random-weight pipeline of its
family (no download), at that pipeline's size, checking its constants, sampler and step count."""

from __future__ import annotations

import runpy
from pathlib import Path

import torch

from .codegen import CodeSpec

TINY_ARCHITECTURES = {"sd": "tiny", "sdxl": "tiny_xl"}


class VerificationError(RuntimeError):
    pass


def verify_file(path: Path, spec: CodeSpec, cache_dir: str) -> None:
    from ..pipelines import random_weights_dir

    namespace = runpy.run_path(str(path), run_name="accel_bench_verify")
    for name, value in spec.constants.items():
        if namespace.get(name) != value:
            raise VerificationError(f"{path}: {name}={namespace.get(name)!r}, expected {value!r}")
    # run at the tiny pipeline's own size: a 512-1024 px image on it would only cost CPU time
    namespace["inference"].__globals__["RESOLUTION"] = None
    model_dir = random_weights_dir(TINY_ARCHITECTURES[spec.family], cache_dir)
    pipe = namespace["load_pipeline"](model_id=str(model_dir), device="cpu", dtype=torch.float32)
    images = namespace["inference"](pipe, ["a lighthouse on a rocky cliff"], torch.Generator("cpu").manual_seed(0))
    if len(images) != 1:
        raise VerificationError(f"{path}: inference returned {len(images)} images for 1 prompt")
    if type(pipe.scheduler).__name__ != spec.scheduler_class:
        raise VerificationError(f"{path}: ran {type(pipe.scheduler).__name__}, expected {spec.scheduler_class}")
    if len(pipe.scheduler.timesteps) != spec.steps:
        raise VerificationError(f"{path}: ran {len(pipe.scheduler.timesteps)} steps, expected {spec.steps}")
