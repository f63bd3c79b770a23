"""The candidate's side: ``python -m accel_bench.evaluate.serve REQUESTS_FD REPLIES_FD``, in the sandbox.

Loads one code file, which defines ``load_pipeline(model_id=...)`` or a module-level ``pipe`` and
optionally ``inference(pipe, prompts, generator)`` (without it the pipeline is called batched with the
task's steps), then answers batches: prompts and per-image seeds in, uint8 images out. Everything here
runs beside the candidate's code and may be patched by it, so nothing here is trusted: the trusted
side times the round trips and checks the images.
"""

from __future__ import annotations

import inspect
import os
import runpy
import sys
import traceback
from typing import Any

import numpy as np
import torch

from ..environment import resolve_dtype, seed_everything
from ..images import to_uint8
from .wire import receive, send

MODEL_ENV = "ACCEL_BENCH_MODEL_ID"  # for files that build a module-level pipe themselves


def as_images(output: Any, count: int) -> np.ndarray:
    """PIL images, arrays or a pipeline output -> (count, H, W, 3) uint8: every side is compared as the
    pixels a user saves, whatever type its file returns."""
    images = getattr(output, "images", output)
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
        if images.ndim == 4 and images.shape[1] in (1, 3):
            images = images.transpose(0, 2, 3, 1)
    elif isinstance(images, (list, tuple)):
        images = np.stack(
            [np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image) for image in images]
        )
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3:
        raise TypeError(f"inference must return {count} RGB images (PIL, array or tensor); got {type(output).__name__}")
    if len(images) != count:
        raise ValueError(f"inference returned {len(images)} images for {count} prompts")
    return np.ascontiguousarray(images if images.dtype == np.uint8 else to_uint8(images))


def _load(namespace: dict, request: dict) -> Any:
    if "load_pipeline" in namespace:
        loader = namespace["load_pipeline"]
        accepted = inspect.signature(loader).parameters
        offered = {
            "model_id": request["model_id"],
            "device": request["device"],
            "dtype": resolve_dtype(request["dtype"], request["device"]),
        }
        return loader(**{k: v for k, v in offered.items() if k in accepted})
    if "pipe" in namespace:
        return namespace["pipe"]
    raise AttributeError("the file defines neither load_pipeline(...) nor a module-level pipe")


def generator(request: dict):
    """The file loaded: a function from (prompts, torch generators) to uint8 images."""
    seed_everything(request["seed"])
    os.environ[MODEL_ENV] = request["model_id"]
    namespace = runpy.run_path(request["code_path"], run_name="accel_bench_evaluate")
    pipe = _load(namespace, request)
    inference = namespace.get("inference")
    if inference is not None and request.get("set_steps"):
        if "NUM_INFERENCE_STEPS" not in inference.__globals__:
            raise ValueError("its step count cannot be set: inference() reads no NUM_INFERENCE_STEPS constant")
        inference.__globals__["NUM_INFERENCE_STEPS"] = request["steps"]
    if inference is None:
        if request["steps"] is None:
            raise ValueError(
                "no step count: the file has no inference(), sets no NUM_INFERENCE_STEPS or literal num_inference_steps=, and the task gives none (steps=)"
            )
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)

    def generate(prompts, generators):
        if inference is not None:
            return as_images(inference(pipe, prompts, generators), len(prompts))
        size = request["resolution"]
        output = pipe(
            prompt=prompts,
            generator=generators,
            num_inference_steps=request["steps"],
            height=size,
            width=size,
            output_type="np",
        )
        return as_images(output, len(prompts))

    return generate


def _message(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"the file called sys.exit({error.code!r})"
    return " ".join(f"{type(error).__name__}: {error}".split())


def main() -> None:
    requests, replies = int(sys.argv[1]), int(sys.argv[2])
    header, _ = receive(requests)
    try:
        generate = generator(header)
        device = torch.device(header["device"])
    except BaseException as error:  # SystemExit and KeyboardInterrupt from the file included
        traceback.print_exc()
        send(replies, {"op": "failed", "error": _message(error)})
        sys.exit(1)
    send(replies, {"op": "ready"})
    while True:
        try:
            header, _ = receive(requests)
        except EOFError:
            return
        if header["op"] == "echo":
            payload = bytes(int(np.prod(header["shape"])))
            send(replies, {"shape": header["shape"], "nbytes": len(payload)}, payload)
            continue
        try:
            generators = [torch.Generator("cpu").manual_seed(seed) for seed in header["seeds"]]
            images = generate(header["prompts"], generators)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except BaseException as error:
            traceback.print_exc()
            send(replies, {"error": _message(error)})
            sys.exit(1)
        send(replies, {"shape": list(images.shape), "nbytes": images.nbytes}, images.tobytes())


if __name__ == "__main__":
    main()
