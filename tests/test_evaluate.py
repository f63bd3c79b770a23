"""The evaluator: ground-truth files from post-process scored on the tiny pipelines, and every way a
code file can go wrong recorded as a failure while the rest are still evaluated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from accel_bench.evaluate import EvaluateConfig, model_location, run_file
from accel_bench.evaluate.codefile import declared_steps
from accel_bench.evaluate.worker import as_images

from .test_postprocess import row, write_sweep

PROMPTS = ["a red fox in the snow", "a lighthouse at night"]


def settings(**overrides):
    cfg = OmegaConf.structured(EvaluateConfig(timeout_s=120, warmup_batches=0, cache_dir=os.environ["ACCEL_BENCH_CACHE"]))
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def measure_file(path, steps=3, **overrides):
    model_id, _ = model_location("tiny", {"tiny": "auto"}, os.environ["ACCEL_BENCH_CACHE"])
    return run_file(Path(path), model_id=model_id, steps=steps, resolution=64, prompts=PROMPTS, batch_size=2, cfg=settings(**overrides))


def test_declared_steps_come_from_the_files_own_source(tmp_path):
    constant, literal, none = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    constant.write_text("NUM_INFERENCE_STEPS = 25\ndef inference(pipe, p, g):\n    return pipe(p, num_inference_steps=10).images\n")
    literal.write_text("def go(pipe):\n    return pipe('x', num_inference_steps=30)\n")
    none.write_text("STEPS = 20\n")
    assert (declared_steps(constant), declared_steps(literal), declared_steps(none)) == (25, 30, None)


def test_code_identity_ignores_the_docstring_only(tmp_path):
    from accel_bench.evaluate.codefile import code_identity

    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""Task: achieve a 2x speedup."""\nSTEPS = 25\n')
    b.write_text('"""Task: achieve a 2.5x speedup."""\n\nSTEPS = 25  # same code\n')
    c.write_text('"""Task: achieve a 2x speedup."""\nSTEPS = 20\n')
    assert code_identity(a) == code_identity(b) != code_identity(c)


def test_images_of_any_type_become_the_same_8_bit_floats():
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    from_pil = as_images([Image.fromarray(p) for p in pixels], 2)
    from_float = as_images(pixels / 255.0 + 0.001, 2)  # unrounded floats land on the same levels
    assert np.array_equal(from_pil, from_float)
    with pytest.raises(ValueError, match="returned 2 images for 3 prompts"):
        as_images(pixels, 3)
    with pytest.raises(TypeError):
        as_images("nope", 2)


NO_INFERENCE = """
import torch
from diffusers import StableDiffusionPipeline

def load_pipeline(model_id, device="cpu", dtype=torch.float32):
    return StableDiffusionPipeline.from_pretrained(model_id, dtype=dtype, safety_checker=None).to(device)
"""
MODULE_PIPE = """
import os
import torch
from diffusers import StableDiffusionPipeline

pipe = StableDiffusionPipeline.from_pretrained(os.environ["ACCEL_BENCH_MODEL_ID"], dtype=torch.float32, safety_checker=None)
NUM_INFERENCE_STEPS = 3
"""
CALLS = """
import torch
from diffusers import StableDiffusionPipeline

CALLS = []

def load_pipeline(model_id, device="cpu", dtype=torch.float32):
    pipe = StableDiffusionPipeline.from_pretrained(model_id, dtype=dtype, safety_checker=None)
    original = pipe.__class__.__call__
    def counting(self, *args, **kwargs):
        assert len(kwargs["prompt"]) == 2, "called one prompt at a time"
        assert kwargs["num_inference_steps"] == 3
        return original(self, *args, **kwargs)
    pipe.__class__ = type("Counting", (pipe.__class__,), {"__call__": counting})
    return pipe
"""


@pytest.mark.parametrize(
    "source, expected_error",
    [
        (NO_INFERENCE, None),
        (MODULE_PIPE, None),
        (CALLS, None),  # without inference(): batched, with the task's steps
        ("raise RuntimeError('agent code is broken')\n", "RuntimeError: agent code is broken"),
        ("import sys\nsys.exit(3)\n", "the file called sys.exit(3)"),
        ("import os\nos._exit(7)\n", "the process exited with code 7 without a result"),
        (NO_INFERENCE + "\ndef inference(pipe, prompts, generator):\n    return pipe(prompts[:1], num_inference_steps=2).images\n",
         "inference returned 1 images for 2 prompts"),
        ("x = 1\n", "the file defines neither load_pipeline(...) nor a module-level pipe"),
    ],
    ids=["no-inference", "module-pipe", "batched-with-task-steps", "raises", "sys-exit", "os-exit", "wrong-return", "no-pipeline"],
)
def test_code_files_run_isolated(tmp_path, source, expected_error):
    path = tmp_path / "candidate.py"
    path.write_text(source)
    result = measure_file(path)
    if expected_error is None:
        assert result.status == "ok", result.error
        assert result.measurement.images.shape == (2, 64, 64, 3) and result.measurement.batch_sizes == [2]
    else:
        assert result.status == "failed" and expected_error in result.error


def test_a_hanging_file_is_stopped_at_the_limit(tmp_path):
    path = tmp_path / "candidate.py"
    path.write_text("import time\ntime.sleep(600)\n")
    result = measure_file(path, timeout_s=8)
    assert (result.status, result.error) == ("failed", "timed out after 8 s")


def test_a_file_without_a_step_count_is_refused_not_defaulted(tmp_path):
    path = tmp_path / "candidate.py"
    path.write_text(NO_INFERENCE)
    result = measure_file(path, steps=None)
    assert result.status == "failed" and "no step count" in result.error


def _evaluate(args, cwd):
    return subprocess.run([sys.executable, "-m", "accel_bench.evaluate", *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_manifest_ground_truth_and_candidates_scored_fairly(tmp_path):
    from accel_bench.postprocess import PostprocessConfig, postprocess

    write_sweep(tmp_path / "sweep", [row(speedup=1.2, clip_loss=0.0, steps=6)])  # one task: target 1.5x
    dataset = tmp_path / "dataset"
    cfg = OmegaConf.merge(OmegaConf.structured(PostprocessConfig), {
        "sweep_dir": str(tmp_path / "sweep"), "out_dir": str(dataset), "budgets": [0.05], "include_random": True, "start_id": 7,
        "grid": {"pipelines": ["tiny"], "schedulers": ["ddim"], "steps": [6]}, "verify": False, "cache_dir": os.environ["ACCEL_BENCH_CACHE"],
        "templates": {"speedup": "Take an {pipeline} pipeline ({sampler}, {steps} steps) as the baseline, and achieve a {speedup}x speedup"},
    })
    postprocess(cfg)
    (entry,) = json.loads((dataset / "manifest.json").read_text())
    agent = tmp_path / "agent"
    agent.mkdir()
    shutil.copy(dataset / entry["path_to_gt_code"], agent / entry["path_to_gen_code"])  # the candidate is the ground truth

    result = _evaluate([f"manifest={dataset / 'manifest.json'}", f"code_dir={agent}", "num_prompts=2", "warmup_batches=0",
                        "save_images=true", "out_dir=scores"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "scores" / entry["path_to_metrics"]).read_text())
    for side in (metrics, metrics["gt"]):
        assert side["status"] == "ok" and side["speedup"] > 1
        assert side["target_speedup"] == 1.5 and side["quality_budget"] == 0.05
        assert side["passed"] == (side["speedup"] >= 1.5 and side["clip_loss"] <= 0.05)
    assert metrics["clip_loss"] == metrics["gt"]["clip_loss"]  # the same code gives the same images
    assert metrics["baseline"]["path"].endswith(entry["path_to_reference_baseline"])
    assert metrics["model_weights"] == "random"
    images = tmp_path / "scores" / "images" / "7"
    assert sorted(p.name for p in images.iterdir()) == ["baseline", "candidate", "gt"]
    rows = (tmp_path / "scores" / "evaluation.csv").read_text().splitlines()
    assert rows[0].startswith("prompt_id,task_key") and rows[1].startswith("7,tiny_DDIM_6")

    # pair mode: the reference baseline against the ground truth, steps read from the files
    pair = _evaluate([f"baseline={dataset / entry['path_to_reference_baseline']}", f"candidate={dataset / entry['path_to_gt_code']}",
                      "pipeline=tiny", "num_prompts=2", "warmup_batches=0", "target_speedup=1.0", "quality_budget=0.5"], tmp_path)
    assert pair.returncode == 0, pair.stderr[-3000:]
    assert "speedup" in pair.stdout and "random weights" in pair.stdout
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["status"] == "ok"


def test_missing_candidate_is_a_failed_record(tmp_path):
    result = measure_file(tmp_path / "0_experiment.py")
    assert result.status == "failed" and result.error.startswith("missing file")


@pytest.mark.parametrize(
    "args, key",
    [(["manifest=nowhere.json", "code_dir=."], "manifest"), (["baseline=a.py"], "baseline"), (["num_prompts=0"], "num_prompts"),
     (["baseline=a.py", "candidate=b.py", "pipeline=sd16"], "pipeline"), (["baseline=a.py", "candidate=b.py", "steps=abc"], "steps")],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, key):
    result = _evaluate(args, tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[0].startswith(f"error: {key}=")
    assert len(result.stderr.strip().splitlines()) == 1


def test_reference_files_with_the_same_code_are_measured_once(tmp_path, monkeypatch):
    import accel_bench.evaluate as evaluate

    calls = []
    monkeypatch.setattr(evaluate, "run_file", lambda path, **kw: calls.append(path) or evaluate.FileRun(str(path), "failed", "x"))
    first, second, other = tmp_path / "1.py", tmp_path / "2.py", tmp_path / "3.py"
    first.write_text('"""easy task"""\nNUM_INFERENCE_STEPS = 25\n')
    second.write_text('"""hard task"""\nNUM_INFERENCE_STEPS = 25\n')
    other.write_text('"""easy task"""\nNUM_INFERENCE_STEPS = 20\n')
    evaluator = evaluate.Evaluator(settings())
    runs = [evaluator.reference(p, model_id="m", steps=25, resolution=64, batch_size=2) for p in (first, second, other)]
    assert calls == [first, other] and runs[0] is runs[1]
    evaluator.reference(first, model_id="m", steps=25, resolution=64, batch_size=4)  # other settings: measured again
    assert len(calls) == 3
