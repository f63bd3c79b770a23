"""One code file, measured in its own process: ``python -m accel_bench.evaluate.worker REQUEST.json``.

The file defines ``load_pipeline(model_id=...)`` or a module-level ``pipe``, and optionally
``inference(pipe, prompts, generator)``. Without ``inference`` the pipeline is called batched
with the task's steps. Timing goes through accel_bench's one ``measure``. Writes
``images.npz`` and ``result.json`` next to the request; any failure, ``sys.exit`` included,
becomes ``{"status": "failed", "error": ...}``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..experiment import seed_everything
from ..measure import measure
from ..metrics import to_uint8
from ..pipelines import resolve_dtype

MODEL_ENV = "ACCEL_BENCH_MODEL_ID"  # for files that build a module-level pipe themselves


def as_images(output: Any, count: int) -> np.ndarray:
    """PIL images, arrays or a pipeline output -> (count, H, W, 3) floats in [0, 1], on 8-bit levels:
    every side is compared as the pixels a user saves, whatever type its file returns."""
    images = getattr(output, "images", output)
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
        if images.ndim == 4 and images.shape[1] in (1, 3):
            images = images.transpose(0, 2, 3, 1)
    elif isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image) for image in images])
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3:
        raise TypeError(f"inference must return {count} RGB images (PIL, array or tensor); got {type(output).__name__}")
    if len(images) != count:
        raise ValueError(f"inference returned {len(images)} images for {count} prompts")
    return to_uint8(images).astype(np.float32) / 255.0 if images.dtype != np.uint8 else images.astype(np.float32) / 255.0


def _load(namespace: dict, request: dict) -> Any:
    if "load_pipeline" in namespace:
        loader = namespace["load_pipeline"]
        accepted = inspect.signature(loader).parameters
        offered = {"model_id": request["model_id"], "device": request["device"], "dtype": resolve_dtype(request["dtype"], request["device"])}
        return loader(**{k: v for k, v in offered.items() if k in accepted})
    if "pipe" in namespace:
        return namespace["pipe"]
    raise AttributeError("the file defines neither load_pipeline(...) nor a module-level pipe")


def evaluate_file(request: dict) -> dict:
    seed_everything(request["seed"])
    os.environ[MODEL_ENV] = request["model_id"]
    namespace = runpy.run_path(request["code_path"], run_name="accel_bench_evaluate")
    pipe = _load(namespace, request)
    inference = namespace.get("inference")
    if inference is None:
        if request["steps"] is None:
            raise ValueError("no step count: the file has no inference(), sets no NUM_INFERENCE_STEPS or literal num_inference_steps=, and the task gives none (steps=)")
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)

    def generate(prompts, generators):
        if inference is not None:
            return as_images(inference(pipe, prompts, generators), len(prompts))
        size = request["resolution"]
        output = pipe(prompt=prompts, generator=generators, num_inference_steps=request["steps"], height=size, width=size, output_type="np")
        return as_images(output, len(prompts))

    measured = measure(
        generate,
        request["prompts"],
        batch_size=request["batch_size"],
        seed=request["seed"],
        warmup_batches=request["warmup_batches"],
        warmup_tolerance=request["warmup_tolerance"],
        warmup_max_batches=request["warmup_max_batches"],
        repeats=request["repeats"],
        device=torch.device(request["device"]),
        count_flops=request["count_flops"],
        label=Path(request["code_path"]).name,
    )
    np.savez(Path(request["out_dir"]) / "images.npz", images=measured.images)
    timings = {f.name: getattr(measured, f.name) for f in dataclasses.fields(measured) if f.name != "images"}
    return {"status": "ok", "measurement": timings}


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    out = Path(request["out_dir"]) / "result.json"
    try:
        result = evaluate_file(request)
    except BaseException as error:  # SystemExit and KeyboardInterrupt from the file included
        if isinstance(error, SystemExit):
            message = f"the file called sys.exit({error.code!r})"
        else:
            message = " ".join(f"{type(error).__name__}: {error}".split())
        traceback.print_exc()
        result = {"status": "failed", "error": message}
    out.write_text(json.dumps(result) + "\n")
    sys.exit(0 if result["status"] == "ok" else 1)


if __name__ == "__main__":
    main()
