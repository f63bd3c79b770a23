"""Where the evaluator's fidelity floor (``min_psnr_db``) goes: PSNR against the baseline's images for
the same inputs, of every ground-truth shape post-process writes and of the fakes a cheat returns.

    python bench/fidelity_floor.py --pipeline tiny --out bench/results/fidelity_floor/tiny.json
    python bench/fidelity_floor.py --pipeline sd15 --device cuda --dtype fp16 --steps 50 --out ...
    python bench/fidelity_floor.py --pipeline sd15 --model stable-diffusion-v1-5/stable-diffusion-v1-5 ...   # real weights

Ground truth: the files post-process generates (``codegen.generate_code``) for DeepCache, ToMe,
T-GATE and their compositions at the parameters of ``+sweep=published``, loaded and run as the
evaluator's sandbox does. Fakes: a constant grey image, black, the baseline's images shuffled within
the prompt set (another prompt, same seed), the same prompts under other seeds (what a cache keyed by
prompt returns once the seeds are fresh), and the baseline's images at a quarter of the resolution,
scaled back up. Each class reports min / median / max over all images.
"""

from __future__ import annotations

import argparse
import json
import platform
import runpy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accel_bench.environment import resolve_dtype  # noqa: E402
from accel_bench.images import to_uint8  # noqa: E402
from accel_bench.measure import prompt_generators  # noqa: E402
from accel_bench.metrics import psnr_db  # noqa: E402
from accel_bench.pipelines import random_weights_dir  # noqa: E402
from accel_bench.postprocess.codegen import CodeSpec, generate_code  # noqa: E402
from accel_bench.prompts import load_prompts  # noqa: E402

FAMILIES = {
    "tiny": ("sd", 64),
    "tiny_xl": ("sdxl", 64),
    "sd15": ("sd", 512),
    "sd21": ("sd", 768),
    "sdxl": ("sdxl", 1024),
}
DEEPCACHE = {"cache_interval": 3, "cache_branch_id": 0}
TOME = {"ratio": 0.5, "sx": 2, "sy": 2, "use_rand": True}
TGATE = {"sp_interval": 5, "fi_interval": 1, "warm_up": 2}


def shapes(steps: int, max_downsample: int) -> dict[str, tuple[list[str], dict]]:
    gate = {"gate_step": round(0.4 * steps), **TGATE}
    tome = {**TOME, "max_downsample": max_downsample}
    return {
        "deepcache_i3": (["deepcache"], DEEPCACHE),
        "deepcache_i5": (["deepcache"], {**DEEPCACHE, "cache_interval": 5}),
        "tome": (["tome"], tome),
        "tgate": (["tgate"], gate),
        "deepcache_tome": (["deepcache", "tome"], {**DEEPCACHE, **tome}),
        "tgate_deepcache": (
            ["deepcache", "tgate"],
            {**DEEPCACHE, **gate, "sp_interval": 1, "warm_up": 0},
        ),  # conf/accel/tgate_deepcache
        "tgate_deepcache_tome": (
            ["deepcache", "tome", "tgate"],
            {**DEEPCACHE, **tome, **gate, "sp_interval": 1, "warm_up": 0},
        ),
    }


def run_file(
    path: Path, model_dir: str, device: str, dtype: torch.dtype, prompts: list[str], seed: int, batch: int
) -> np.ndarray:
    namespace = runpy.run_path(str(path), run_name="fidelity_floor")
    pipe = namespace["load_pipeline"](model_id=model_dir, device=device, dtype=dtype)
    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        images = namespace["inference"](pipe, chunk, prompt_generators(seed, start, len(chunk)))
        out.append(np.stack([np.asarray(im.convert("RGB")) for im in images]))
    del pipe
    if device == "cuda":
        torch.cuda.empty_cache()
    return np.concatenate(out).astype(np.float32) / 255.0


def summary(values: np.ndarray) -> dict[str, float]:
    finite = np.minimum(values, 99.0)  # identical images: +inf, reported as 99 dB
    return {"min": float(finite.min()), "median": float(np.median(finite)), "max": float(finite.max())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipeline", default="tiny", choices=sorted(FAMILIES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--model", help="a hub id or folder with real weights (default: the random-weight architecture)"
    )
    parser.add_argument("--cache-dir", default="~/.cache/accel_bench")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    family, resolution = FAMILIES[args.pipeline]
    resolution = 64 if args.pipeline.startswith("tiny") else resolution
    max_downsample = 2 if family == "sdxl" and not args.pipeline.startswith("tiny") else 1
    model_dir = args.model or str(random_weights_dir(args.pipeline, args.cache_dir))
    dtype = resolve_dtype(args.dtype, args.device)
    prompts = load_prompts({"source": "builtin", "path": None})[: args.prompts]
    began = time.time()

    def spec(methods, params):
        return CodeSpec(None, family, "DDIMScheduler", {}, args.steps, resolution, 7.5, methods, params)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def images_of(name, methods, params, seed=0):
            path = Path(tmp) / f"{name}.py"
            path.write_text(generate_code(spec(methods, params), name))
            return run_file(path, model_dir, args.device, dtype, prompts, seed, args.batch)

        base = images_of("baseline", [], {})
        for name, (methods, params) in shapes(args.steps, max_downsample).items():
            results[f"gt:{name}"] = summary(psnr_db(base, images_of(name, methods, params)))
            print(name, results[f"gt:{name}"], flush=True)
        other_seed = images_of("baseline", [], {}, seed=1)
        low = torch.nn.functional.interpolate(
            torch.from_numpy(base).permute(0, 3, 1, 2), scale_factor=0.25, mode="area"
        )
        upscaled = (
            to_uint8(
                torch.nn.functional.interpolate(low, size=base.shape[1:3], mode="bilinear").permute(0, 2, 3, 1).numpy()
            )
            / 255.0
        )
        fakes = {
            "grey": np.full_like(base, 128 / 255.0),
            "black": np.zeros_like(base),
            "shuffled": np.roll(base, 1, axis=0),
            "other_seed": other_seed,
            "quarter_resolution": upscaled,
        }
        for name, fake in fakes.items():
            results[f"fake:{name}"] = summary(psnr_db(base, fake))
            print(name, results[f"fake:{name}"], flush=True)

    record = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {
            "host": platform.node(),
            "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "torch": torch.__version__,
        },
        "pipeline": args.pipeline,
        "weights": "pretrained" if args.model else "random",
        "model": args.model,
        "steps": args.steps,
        "scheduler": "DDIM",
        "dtype": str(dtype),
        "images": len(prompts),
        "psnr_db": results,
        "seconds": round(time.time() - began, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
