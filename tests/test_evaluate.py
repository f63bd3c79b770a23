"""The evaluator: its sandbox, fresh inputs, image checks and verdicts, ground-truth files from
post-process scored end to end, and bad input refused. tests/test_red_team.py holds the cheats."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from accel_bench.evaluate.codefile import declared_steps
from accel_bench.evaluate.protocol import Exchange, Failure
from accel_bench.evaluate.records import compare
from accel_bench.evaluate.sandbox import SandboxConfig, SandboxedProcess, probe
from accel_bench.evaluate.serve import as_images
from accel_bench.evaluate.session import SideResult, SideSpec
from accel_bench.evaluate.verdicts import median_interval, speed_verdict
from accel_bench.measure import FreshInputs, WarmupPolicy, measure_sides
from accel_bench.metrics import Metric, Scored

from .conftest import FORKS
from .test_postprocess import row, write_sweep

BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(not BWRAP, reason="bubblewrap (Debian package bubblewrap) is not installed")


def test_declared_steps_come_from_the_files_own_source(tmp_path):
    constant, literal, none = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    constant.write_text(
        "NUM_INFERENCE_STEPS = 25\ndef inference(pipe, p, g):\n    return pipe(p, num_inference_steps=10).images\n"
    )
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


def test_images_of_any_type_become_the_same_8_bit_pixels():
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    from_pil = as_images([Image.fromarray(p) for p in pixels], 2)
    from_float = as_images(pixels / 255.0 + 0.001, 2)  # unrounded floats land on the same levels
    from_tensor = as_images(torch.from_numpy(pixels / 255.0).permute(0, 3, 1, 2), 2)
    assert np.array_equal(from_pil, from_float) and np.array_equal(from_pil, from_tensor) and from_pil.dtype == np.uint8
    with pytest.raises(ValueError, match="returned 2 images for 3 prompts"):
        as_images(pixels, 3)
    with pytest.raises(TypeError):
        as_images("nope", 2)


def _evaluate(args, cwd):
    return FORKS.run(["-m", "accel_bench.evaluate", *args], cwd, 900)


def test_manifest_ground_truth_and_candidates_scored_fairly(tmp_path):
    from accel_bench.postprocess import PostprocessConfig, postprocess

    write_sweep(tmp_path / "sweep", [row(speedup=1.2, clip_loss=0.0, steps=6)])  # one task: target 1.5x
    dataset = tmp_path / "dataset"
    cfg = OmegaConf.merge(
        OmegaConf.structured(PostprocessConfig),
        {
            "sweep_dir": str(tmp_path / "sweep"),
            "out_dir": str(dataset),
            "budgets": [0.05],
            "include_random": True,
            "start_id": 7,
            "grid": {"pipelines": ["tiny"], "schedulers": ["ddim"], "steps": [6]},
            "verify": False,
            "cache_dir": os.environ["ACCEL_BENCH_CACHE"],
            "templates": {
                "speedup": "Take an {pipeline} pipeline ({sampler}, {steps} steps) as the baseline, and achieve a {speedup}x speedup"
            },
        },
    )
    postprocess(cfg)
    (entry,) = json.loads((dataset / "manifest.json").read_text())
    agent = tmp_path / "agent"
    agent.mkdir()
    shutil.copy(
        dataset / entry["path_to_gt_code"], agent / entry["path_to_gen_code"]
    )  # the candidate is the ground truth

    result = _evaluate(
        [
            f"manifest={dataset / 'manifest.json'}",
            f"code_dir={agent}",
            "num_prompts=2",
            "warmup_batches=0",
            "save_images=true",
            "out_dir=scores",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "scores" / entry["path_to_metrics"]).read_text())
    for side in (metrics, metrics["gt"]):
        # the speed itself is a 2-core machine's to vary; what it decides must follow from it
        assert side["status"] == "ok" and side["speedup"] > 0
        assert side["target_speedup"] == 1.5 and side["quality_budget"] == 0.05
        assert side["passed"] == (side["reason"] is None)
        assert side["passed"] <= (side["speedup"] >= 1.5 and side["clip_loss"] <= 0.05)
    assert metrics["clip_loss"] == metrics["gt"]["clip_loss"]  # the same code gives the same images
    assert metrics["lpips"] == metrics["gt"]["lpips"] and metrics["lpips"] >= 0 and entry["budget_metric"] == "clip"
    assert metrics["metric_weights"] == {
        "clip": "accel-bench-tiny-clip/random",
        "lpips": "lpips-v0.1/alex/random",
        "ssim": "none",
    }
    assert metrics["psnr_min_db"] == metrics["gt"]["psnr_min_db"] >= 25 and metrics["images_checked"] == 2
    assert metrics["psnr_db"] == metrics["gt"]["psnr_db"] >= metrics["psnr_min_db"]  # the checks' median
    assert "watched" not in metrics["baseline"] and metrics["baseline"]["passes_measured"] >= 1  # flat, as a row
    assert metrics["baseline"]["path"].endswith(entry["path_to_reference_baseline"])
    assert metrics["model_weights"] == "random" and isinstance(metrics["input_seed"], int)
    assert metrics["sandbox"]["kind"] == ("bwrap" if BWRAP else "none") and metrics["round_trip_share"] < 0.05
    images = tmp_path / "scores" / "images" / "7"
    assert sorted(p.name for p in images.iterdir()) == ["baseline", "candidate", "gt"]
    rows = (tmp_path / "scores" / "evaluation.csv").read_text().splitlines()
    assert rows[0].startswith("prompt_id,task_key") and rows[1].startswith("7,tiny_DDIM_6")
    (scored,) = csv.DictReader(rows)
    assert scored["bar_doubt"] == (metrics["bar"]["doubt"] or "") and scored["bar"] == metrics["bar"]["kind"]

    # the ground truth runs as written, from the dataset's folder (a tiny entry's model travels with it)
    for code in (entry["path_to_gt_code"], entry["path_to_reference_baseline"]):
        ran = FORKS.run([code], dataset, 300)
        assert ran.returncode == 0 and "wrote sample.png" in ran.stdout, ran.stderr[-2000:]
    assert (dataset / "sample.png").is_file() and (dataset / "models" / "tiny" / "model_index.json").is_file()


def _written_manifest(tmp_path: Path) -> Path:
    """A manifest as post-process writes it: two tasks of one tiny entry (no verification)."""
    from accel_bench.postprocess import PostprocessConfig, postprocess

    write_sweep(tmp_path / "sweep", [row(speedup=2.4, clip_loss=0.0, steps=6)])
    cfg = OmegaConf.merge(
        OmegaConf.structured(PostprocessConfig),
        {
            "sweep_dir": str(tmp_path / "sweep"),
            "out_dir": str(tmp_path / "dataset"),
            "budgets": [0.05],
            "include_random": True,
            "grid": {"pipelines": ["tiny"], "schedulers": ["ddim"], "steps": [6]},
            "verify": False,
            "cache_dir": os.environ["ACCEL_BENCH_CACHE"],
            "templates": {"speedup": "Make the {pipeline} pipeline ({sampler}, {steps} steps) {speedup}x faster"},
        },
    )
    postprocess(cfg)
    return tmp_path / "dataset" / "manifest.json"


def test_a_manifest_the_evaluator_cannot_judge_is_refused_in_one_line_naming_the_task(tmp_path):
    """Post-process's manifest reads back whole, in prompt-id order; a cut-down or hand-written one with
    a task the evaluator cannot judge stops before anything runs, naming the task and the key."""
    from accel_bench.errors import ConfigError
    from accel_bench.evaluate.manifest import read_manifest, write_manifest

    path = _written_manifest(tmp_path)
    text = path.read_text()
    written = json.loads(text)
    tasks = read_manifest(path)  # the record post-process wrote it from reads it back, byte for byte
    assert len(written) >= 2 and [t.to_json() for t in tasks] == sorted(written, key=lambda e: int(e["prompt_id"]))
    write_manifest(path, tasks[::-1])
    assert path.read_text() == text
    path.write_text(json.dumps(written[::-1]))
    assert [t.prompt_id for t in read_manifest(path)] == sorted((e["prompt_id"] for e in written), key=int)
    judged = {"prompt_id", "task_key", "difficulty", "pipeline", "steps", "resolution", "batch_size"}
    judged |= {"target_speedup", "quality_budget", *(k for k in written[0] if k.startswith("path_to_"))}
    by_hand = [{k: v for k, v in e.items() if k in judged} | {"mine": 1} for e in written]
    path.write_text(json.dumps(by_hand))  # a hand-written manifest: what is judged, and a note of its own
    read = read_manifest(path)
    assert [(t.budget_metric, t.bar, t.run_id) for t in read] == [("clip", None, None)] * len(written)

    def changed(**changes):
        first = {k: v for k, v in {**written[0], **changes}.items() if v is not DROP}
        return [first, *written[1:]]

    DROP = object()
    cases = [
        ("{not json", "not JSON"),
        (json.dumps({"tasks": written}), "a JSON list of tasks, not a dict"),
        (json.dumps(["12"]), "task 0 is a str, not an object"),
        (changed(steps=DROP), "task 0 has no 'steps'"),
        (changed(steps="6"), "task 0's steps='6': an integer >= 1"),
        (changed(target_speedup=True), "task 0's target_speedup=True: a speedup > 0"),
        (changed(pipeline="sd16"), "task 0's pipeline='sd16': sd15 | sd21 | sdxl | tiny | tiny_xl"),
        (changed(path_to_metrics="../../x.json"), "task 0's path_to_metrics='../../x.json': a relative path"),
        (changed(path_to_gen_code="/tmp/x.py"), "task 0's path_to_gen_code='/tmp/x.py': a relative path"),
        (changed(budget_metric="psnr"), "task 0's budget_metric='psnr': clip | ssim | lpips"),
        (changed(bar={"kind": "fewer_steps", "margin_db": -1}), "task 0's bar="),
        (changed(prompt_id=written[1]["prompt_id"]), "is another task's too"),
    ]
    for content, why in cases:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(ConfigError) as refused:
            read_manifest(path)
        assert refused.value.key == "manifest" and why in str(refused.value), (why, str(refused.value))
    agent = tmp_path / "agent"
    agent.mkdir()
    result = _evaluate([f"manifest={path}", f"code_dir={agent}"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: manifest={str(path)!r} is not allowed: a manifest.json written by accel_bench.postprocess; "
        f"task 1's prompt_id={written[1]['prompt_id']!r} is another task's too"
    ]
    assert list(agent.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    "args, key",
    [
        (["manifest=nowhere.json", "code_dir=."], "manifest"),
        (["baseline=a.py"], "baseline"),
        (["num_prompts=0"], "num_prompts"),
        (["baseline=a.py", "candidate=b.py", "pipeline=sd16"], "pipeline"),
        (["baseline=a.py", "candidate=b.py", "steps=abc"], "steps"),
        (["min_psnr_db=0"], "min_psnr_db"),
        (["fewer_steps_margin_db=-1"], "fewer_steps_margin_db"),
        (["budget_metric=psnr"], "budget_metric"),
        (["metrics=[clip,hpsv2]"], "metrics"),
        (["max_repeats=0"], "max_repeats"),
        (["sandbox=maybe"], "sandbox"),  # a whole section given a value
        (["code_dir"], "override"),  # not an override
        (["baseline=base.py", "candidate=base.py", "pipeline=tiny", "sandbox.memory_gb=-1"], "sandbox.memory_gb"),
        (["baseline=base.py", "candidate=base.py", "pipeline=tiny", "target_speedup=-1"], "target_speedup"),
        (["baseline=base.py", "candidate=base.py", "pipeline=tiny", "quality_budget=5"], "quality_budget"),
        (["baseline=base.py", "candidate=base.py", "pipeline=tiny", "steps=0"], "steps"),
        (["baseline=base.py", "candidate=base.py", "pipeline=tiny", "input_seed=-5"], "input_seed"),
        (["baseline=base.py", "candidate=base.py", "pipeline=tiny", "models.tiny=./no/such/folder"], "models.tiny"),
        (["baseline=base.py", "candidate=base.py", "pipeline=tiny", "+models.sd16=random"], "models.sd16"),
        (["baseline=base.py", "candidate=base.py", "pipeline=tiny", "dtype=fp8"], "dtype"),
        (
            ["baseline=base.py", "candidate=base.py", "pipeline=tiny", "out_dir=base.py/scores"],
            "out_dir",
        ),  # under a file
        (
            ["baseline=base.py", "candidate=base.py", "pipeline=tiny", f"device=cuda:{torch.cuda.device_count()}"],
            "device",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, key):
    (tmp_path / "base.py").write_text("x = 1\n")
    result = _evaluate(args, tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[0].startswith(f"error: {key}=")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_candidate_that_does_not_parse_is_scored_as_crashed_not_the_evaluators_crash(tmp_path):
    """The trusted side reads a file's step count without running it; a file that does not parse
    fails its own load in the sandbox and is scored so."""
    from accel_bench.evaluate.codefile import code_identity, declared_steps, settable_steps

    (tmp_path / "base.py").write_text(LIGHT_FILE.format(sleep=0.0))
    (tmp_path / "broken.py").write_text("NUM_INFERENCE_STEPS = (\n")
    (tmp_path / "binary.py").write_bytes(b"\xff\xfe\x00")
    for unparsed in ("broken.py", "binary.py"):  # an agent's own baseline is read the same way, in manifest mode
        assert declared_steps(tmp_path / unparsed) is None and not settable_steps(tmp_path / unparsed)
    assert code_identity(tmp_path / "broken.py") != code_identity(tmp_path / "binary.py")
    result = _evaluate(["baseline=base.py", "candidate=broken.py", "pipeline=tiny", "num_prompts=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no measurement of the candidate" in result.stdout
    scored = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert scored["status"] == "failed" and "SyntaxError" in scored["error"]


def test_without_a_sandbox_it_refuses_unless_allowed_and_says_so(tmp_path):
    (tmp_path / "base.py").write_text(LIGHT_FILE.format(sleep=0.0))
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no bwrap on it
    args = ["baseline=base.py", "candidate=base.py", "pipeline=tiny", "num_prompts=2"]
    refused = FORKS.run(["-m", "accel_bench.evaluate", *args], tmp_path, 300, env)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: allow_unsandboxed=False is not allowed: true to run candidate code without a sandbox: bubblewrap (bwrap) is not installed"
    ]
    assert not (tmp_path / "evaluation").exists()
    allowed = FORKS.run(["-m", "accel_bench.evaluate", *args, "allow_unsandboxed=true"], tmp_path, 300, env)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "candidate code runs unconfined" in allowed.stdout
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["sandbox"]["kind"] == "none"


# A pipeline-free code file: images are a function of (prompt, seed), as a pipeline's are; it can be slow.
LIGHT_FILE = """
import time
import zlib
import numpy as np
CALLS = [0]
def load_pipeline(model_id):
    return None
def inference(pipe, prompts, generator):
    CALLS[0] += 1
    time.sleep({sleep})
    return np.stack([np.random.default_rng([zlib.crc32(p.encode()), g.initial_seed()]).integers(0, 256, (64, 64, 3), dtype=np.uint8)
                     for p, g in zip(prompts, generator)])
"""


def test_fresh_inputs_are_never_seen_twice_and_the_sides_stay_paired():
    from contextlib import contextmanager

    seen: dict[str, list] = {"A": [], "B": []}

    def side(name):
        @contextmanager
        def opener():
            yield (
                (
                    lambda prompts, gens: (
                        seen[name].append([(p, g.initial_seed()) for p, g in zip(prompts, gens)])
                        or np.zeros((len(prompts), 1, 1, 3))
                    )
                ),
                None,
            )

        return opener

    def run(first_pass, warmup):
        before = {k: len(v) for k, v in seen.items()}
        measure_sides(
            [side("A"), side("B")],
            list("abcd"),
            batch_size=2,
            seed=0,
            warmup=warmup,
            device=torch.device("cpu"),
            repeats=3,
            interleave=True,
            count_flops=False,
            fresh=FreshInputs(11, first_pass),
        )
        return {k: v[before[k] :] for k, v in seen.items()}

    first, again = run(0, WarmupPolicy(2)), run(3, WarmupPolicy(0))
    for calls in (first, again):
        assert calls["A"] == calls["B"]  # the same inputs on both sides, batch for batch
    inputs = [key for batch in first["A"] + again["A"] for key in batch]
    assert len(inputs) == len(set(inputs)) == 2 * 2 + 3 * 4 + 3 * 4  # warm-up batches, passes, re-measured passes
    orders = {tuple(p for batch in first["A"][2 + 2 * r : 4 + 2 * r] for p, _ in batch) for r in range(3)}
    assert len(orders) > 1 and all(
        sorted(o) == list("abcd") for o in orders
    )  # every pass has every prompt, not in one order
    assert run(0, WarmupPolicy(2))["A"] == first["A"]  # the same secret draws the same inputs


def test_the_verdict_interval_is_the_range_for_few_passes_and_narrows_with_more():
    assert median_interval([1.2, 1.0, 1.1]) == (1.0, 1.2)
    assert median_interval([1, 2, 3, 4, 5, 6, 7, 8]) == (2, 7)
    assert median_interval(list(range(12))) == (2, 9)
    assert [
        speed_verdict([1.6, 1.7, 1.8], 1.5),
        speed_verdict([1.2, 1.3, 1.4], 1.5),
        speed_verdict([1.4, 1.5, 1.6], 1.5),
    ] == ["passed", "failed", "inconclusive"]


class _Brightness(Metric):
    """CLIP stand-in: a score per image, its mean brightness; its loss the relative drop."""

    name = "clip"
    columns = ("clip_score", "base_clip_score", "clip_loss")
    budget_column = "clip_loss"
    weights = "brightness"

    def score(self, base_images, images, prompts, reference):
        assert len(images) == len(prompts) == len(base_images)
        base, mine = (float(np.mean(10 + x.reshape(len(x), -1).mean(axis=1))) for x in (base_images, images))
        return Scored({"clip_score": mine, "base_clip_score": base, "clip_loss": (base - mine) / base}, self.weights)


def _side(label, images, seconds, failure=None):
    exchanges = [Exchange(["a", "b"], [1, 2], images[:2]), Exchange(["c", "d"], [3, 4], images[2:])]
    return SideResult(
        SideSpec(label, Path(f"{label}.py"), 6), failure, list(seconds), 0, exchanges if failure is None else []
    )


@pytest.mark.parametrize(
    "make, seconds, target, budget, reasons",
    [
        (lambda base: base.copy(), [0.5, 0.5], 1.5, 0.1, []),
        (lambda base: base.copy(), [0.9, 0.9], 1.5, 0.1, ["too_slow"]),
        (lambda base: base.copy(), [0.5, 0.9], 1.5, 0.1, ["inconclusive"]),
        (lambda base: np.full_like(base, 200), [0.1, 0.1], 1.5, 0.1, ["wrong_images", "unfaithful"]),
        (lambda base: base[[1, 0, 3, 2]], [0.1, 0.1], 1.5, 1.0, ["unfaithful"]),
        (lambda base: base.clip(0, 100), [0.5, 0.5], 1.5, 0.0, ["unfaithful", "over_budget"]),
    ],
    ids=["faithful-fast", "faithful-slow", "straddling", "constant", "swapped", "darker"],
)
def test_records_name_every_reason_that_applies(make, seconds, target, budget, reasons):
    base_images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    base = _side("baseline", base_images, [1.0, 1.0])
    side = _side("candidate", make(base_images), seconds)
    record = compare(base, side, [_Brightness()], target, budget, 25.0)
    assert record.reasons == reasons and record.reason == (reasons[0] if reasons else None)
    assert record.passed is (not reasons) and record.images_checked == 4
    assert record.metric_weights == ({"clip": "brightness"} if "wrong_images" not in reasons else {})
    failed = compare(_side("baseline", base_images, [], Failure("crashed", "boom")), side, [], target, budget, 25.0)
    assert failed.reason == "baseline_failed" and failed.passed is False


def _sandboxed(script, memory_gb=4.0):
    info = probe(SandboxConfig(memory_gb=memory_gb), allow_unsandboxed=False)
    return SandboxedProcess(info, [sys.executable, "-c", script], [], [], dict(os.environ))


@needs_bwrap
def test_the_sandbox_confines_and_its_processes_end_with_it(tmp_path):
    probe_script = f"""
import os, socket, subprocess, sys
for path in ("/root/x", "{tmp_path}/x", os.path.expanduser("~") + "/../etc/x"):
    try:
        open(path, "w").write("x"); print("wrote", path)
    except OSError as error:
        print("read-only", path)
open("/tmp/private", "w").write("x"); print("tmp writable")
try:
    socket.create_connection(("1.1.1.1", 80), timeout=2); print("network")
except OSError:
    print("no network")
print("processes", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
subprocess.Popen(["sleep", "3600"], start_new_session=True)
import time
n = 0
while True:
    n += 1; print("tick", n, flush=True); time.sleep(0.05)
"""
    sandbox = _sandboxed(probe_script)
    deadline = time.time() + 60
    while not any(line.startswith("tick") for line in sandbox.log) and time.time() < deadline:
        time.sleep(0.1)
    log = list(sandbox.log)
    assert not any(line.startswith("wrote") for line in log) and "tmp writable" in log and "no network" in log, log
    assert [line for line in log if line.startswith("processes")] == ["processes [1, 2]"]  # its own PID namespace
    assert len(sandbox.members()) >= 3  # init, python, the detached sleep
    sandbox.freeze()
    ticks = len(sandbox.log)
    time.sleep(0.5)
    assert len(sandbox.log) == ticks  # frozen: nothing in it runs
    sandbox.thaw()
    time.sleep(0.5)
    assert len(sandbox.log) > ticks
    members = sandbox.members()
    sandbox.kill()
    time.sleep(0.2)
    assert not [
        pid
        for pid in members
        if os.path.exists(f"/proc/{pid}") and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    ]


@needs_bwrap
def test_the_memory_limit_ends_the_sandbox():
    sandbox = _sandboxed("import numpy as np, time\nx = np.ones(2_000_000_000 // 8)\ntime.sleep(60)", memory_gb=1.0)
    assert sandbox.process.wait(timeout=60) != 0 and sandbox.out_of_memory and sandbox.peak_rss_gb > 1.0


def test_an_open_verdict_is_re_measured_and_stays_open_if_the_passes_disagree(tmp_path):
    from accel_bench.evaluate import session
    from accel_bench.evaluate.sandbox import SandboxInfo

    (tmp_path / "base.py").write_text(LIGHT_FILE.format(sleep=0.1))
    # alternately 5x faster and 2x slower than the baseline, pass by pass (2 batches a pass, 1 warm-up batch)
    (tmp_path / "erratic.py").write_text(LIGHT_FILE.format(sleep="0.02 if ((CALLS[0] - 2) // 2) % 2 == 0 else 0.2"))
    info = probe(SandboxConfig(), allow_unsandboxed=True) if BWRAP else SandboxInfo("none", None, 4.0, None)
    settings = session.Settings("unused", 64, 2, "cpu", "auto", 0, WarmupPolicy(1), 2, 6, 60)
    sides = [SideSpec("baseline", tmp_path / "base.py", 6), SideSpec("erratic", tmp_path / "erratic.py", 6, (1.0,))]
    results, _ = session.run(sides, settings, info, list("abcd"), input_seed=3)
    record = compare(results["baseline"], results["erratic"], [_Brightness()], 1.0, None, 25.0)
    # re-measured to the cap; its passes of the minority speed are outlier batches, which the record names,
    # and with or without them the verdict stays open
    assert record.watched.passes_measured == 6 and record.verdict == "inconclusive" and record.reason == "inconclusive"
    assert record.watched.outlier_batches > 0 and record.disturbed == "this file: outlier batch"
    assert record.speedup_min < 1.0 < record.speedup_max and record.passed is False
    assert record.psnr_min_db == 99 and record.images_checked == 24


@needs_bwrap
def test_a_sandbox_that_cannot_be_made_is_the_reason(tmp_path, monkeypatch):
    from accel_bench.evaluate import sandbox as sandbox_module
    from accel_bench.evaluate import session

    made = sandbox_module.command
    monkeypatch.setattr(
        sandbox_module, "command", lambda *a: made(*a)[:1] + ["--bind", "/nonexistent", "/x"] + made(*a)[1:]
    )
    (tmp_path / "base.py").write_text(LIGHT_FILE.format(sleep=0.0))
    settings = session.Settings("unused", 64, 2, "cpu", "auto", 0, WarmupPolicy(0), 1, 1, 60)
    results, _ = session.run(
        [SideSpec("baseline", tmp_path / "base.py", 6)], settings, probe(SandboxConfig(), False), list("ab")
    )
    failure = results["baseline"].failure
    assert (
        failure.reason == "sandbox"
        and "bwrap could not make the sandbox" in failure.message
        and "/nonexistent" in failure.message
    )


def test_the_candidate_side_imports_nothing_of_the_run_path():
    """serve.py runs beside candidate code: it loads the wire format, seeding and pixels, not the config,
    accelerators, timing, metrics or records (which a candidate could patch, and which cost start-up)."""
    script = "import sys, accel_bench.evaluate.serve; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    )
    ours = {m for m in loaded if m.startswith("accel_bench")}
    assert ours == {
        "accel_bench",
        "accel_bench.environment",
        "accel_bench.evaluate",
        "accel_bench.evaluate.serve",
        "accel_bench.evaluate.wire",
        "accel_bench.images",
    }, ours
    assert not {m for m in loaded if m.split(".")[0] in ("hydra", "omegaconf", "diffusers", "open_clip")}
