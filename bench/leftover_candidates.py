"""Code files for the leftover-work scenario (bench/disturbance.sh evaluator): the reference baseline, and
the same plain pipeline leaving GPU work queued behind each reply.

    python bench/leftover_candidates.py FOLDER PIPELINE

``leftover_F.py`` runs the plain pipeline, then queues on a side stream about F x the batch's own GPU
time of large matrix products, patches ``torch.cuda.synchronize`` to return at once, and replies: the
images are the baseline's, the work is more than the baseline's, and without the trusted side's drain
the next side's batch would pay for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from accel_bench.config import CONF_DIR
from accel_bench.postprocess.codegen import CodeSpec, generate_code

LEFTOVER = '''

import time as _time

_real_synchronize = torch.cuda.synchronize
_plain_inference = inference
_state = {{}}


def _product_s():
    """Seconds one 4096x4096 fp16 product takes on this GPU (measured once, before the patch)."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ a
    _real_synchronize()
    began = _time.perf_counter()
    for _ in range(20):
        a @ a
    _real_synchronize()
    return a, (_time.perf_counter() - began) / 20


def inference(pipe, prompts, generator=None):
    began = _time.perf_counter()
    images = _plain_inference(pipe, prompts, generator)  # PIL images: the default stream is done
    batch_s = _time.perf_counter() - began
    if "a" not in _state:
        _state["a"], _state["product_s"] = _product_s()
        _state["stream"] = torch.cuda.Stream()
    with torch.cuda.stream(_state["stream"]):
        for _ in range(int({fraction} * batch_s / _state["product_s"])):
            _state["a"] @ _state["a"]
    return images


torch.cuda.synchronize = lambda *args, **kwargs: None
'''


def main(folder: str, pipeline: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    cfg = OmegaConf.load(CONF_DIR / "pipeline" / f"{pipeline}.yaml")
    spec = CodeSpec(
        model_id=cfg.get("model_id") or pipeline,
        family=cfg.family,
        scheduler_class="DDIMScheduler",
        scheduler_kwargs={},
        steps=20,
        resolution=cfg.resolution,
        guidance_scale=7.5,
        methods=[],
        params={},
    )
    plain = generate_code(spec, f"Reference baseline: {pipeline}, DDIM, 20 steps.")
    (out / "baseline.py").write_text(plain)
    (out / "plain.py").write_text(plain.replace("Reference baseline", "The plain pipeline as a candidate"))
    for fraction in (0.25, 0.5, 1.0):
        (out / f"leftover_{fraction}.py").write_text(
            plain.split('\n\nif __name__ == "__main__":')[0] + LEFTOVER.format(fraction=fraction)
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
