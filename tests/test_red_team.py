"""The red team: candidates that accelerate nothing and try to be credited anyway, each of which must
fail with its reason, beside honest files (every ground-truth shape post-process writes) that must
pass unchanged. Classes from the known attacks on kernel benchmarks (reference-kernels #162, kernelbot #501,
KernelBench #82, flashinfer-bench-starter-kit #21): output replay keyed by prompt or by input, a
patched clock, forged result files and console lines, blank / noise / shuffled / other-seed /
low-detail / wrong-size images, processes left running, work that slows the other sides, attacks
on the evaluator's processes, protocol abuse, hangs, memory exhaustion.

Each session is one real ``python -m accel_bench.evaluate`` over a hand-written manifest whose tasks
share one baseline and one ground truth: all candidates of a session are measured interleaved in one
comparison, in the bubblewrap sandbox. Image cheats and the honest files run on the tiny pipeline;
cheats on the process run on a light CPU-bound stand-in whose images are a function of prompt and
seed, as a pipeline's are (the evaluator cannot tell the difference, and it starts in a second).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accel_bench.postprocess.codegen import CodeSpec, generate_code

from .test_postprocess import PARAMS

STEPS = 6
BWRAP = subprocess.run(["sh", "-c", "command -v bwrap"], capture_output=True).returncode == 0
pytestmark = pytest.mark.skipif(not BWRAP, reason="bubblewrap (Debian package bubblewrap) is not installed")

HONEST_CORE = f"""
import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

STEPS = {STEPS}

def load_pipeline(model_id, device="cpu", dtype=torch.float32):
    pipe = StableDiffusionPipeline.from_pretrained(model_id, dtype=dtype, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

def honest(pipe, prompts, generator):
    return pipe(prompt=list(prompts), generator=generator, num_inference_steps=STEPS, height=64, width=64, output_type="np").images
"""

LIGHT_CORE = """
import zlib
import numpy as np
import torch

def load_pipeline(model_id):
    return "light"

def honest(pipe, prompts, generator):
    work = np.random.default_rng(0).random((256, 256))
    for _ in range(400):  # CPU work, as a pipeline on a CPU does: about 0.25 s a batch
        work = np.tanh(work @ work / 256)
    return np.stack([np.random.default_rng([zlib.crc32(p.encode()), g.initial_seed()]).integers(0, 256, (64, 64, 3), dtype=np.uint8)
                     for p, g in zip(prompts, generator)])
"""
LIGHT_BASELINE = (
    LIGHT_CORE + "\ndef inference(pipe, prompts, generator):\n    return honest(pipe, prompts, generator)\n"
)

CHEATS = {
    # output replay keyed by prompt (flashinfer #21's fingerprint cache): fresh seeds make the replay another seed's image
    # (the replayed image is another input's: the same image for two inputs, and unfaithful to both)
    "replay_by_prompt": (
        "wrong_images",
        """
CACHE = {}
def inference(pipe, prompts, generator):
    todo = [i for i, p in enumerate(prompts) if p not in CACHE]
    if todo:
        images = honest(pipe, [prompts[i] for i in todo], [generator[i] for i in todo])
        CACHE.update({prompts[i]: image for i, image in zip(todo, images)})
    return np.stack([CACHE[p] for p in prompts])
""",
    ),
    # replay keyed by the whole input, precomputed at load for the seeds run.py would use: never hit
    "replay_by_input": (
        "too_slow",
        """
from accel_bench.measure import prompt_seed
from accel_bench.prompts import load_prompts
CACHE = {}
_load = load_pipeline
def load_pipeline(model_id):
    pipe = _load(model_id)
    for i, prompt in enumerate(load_prompts({"source": "builtin", "path": None})[:4]):
        seed = prompt_seed(0, i)
        CACHE[(prompt, seed)] = honest(pipe, [prompt], [torch.Generator("cpu").manual_seed(seed)])[0]
    return pipe
def inference(pipe, prompts, generator):
    keys = [(p, g.initial_seed()) for p, g in zip(prompts, generator)]
    if all(k in CACHE for k in keys):
        return np.stack([CACHE[k] for k in keys])
    return honest(pipe, prompts, generator)
""",
    ),
    # reference-kernels #162: the process's clocks run ten times slow
    "clock_patch": (
        "too_slow",
        """
import time
for name in ("perf_counter", "monotonic", "time", "process_time"):
    real = getattr(time, name)
    setattr(time, name, (lambda real: (lambda: real() / 10))(real))
for name in ("perf_counter_ns", "monotonic_ns", "time_ns"):
    real = getattr(time, name)
    setattr(time, name, (lambda real: (lambda: real() // 10))(real))
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)
""",
    ),
    # forged records: writes beside the code files, into the baseline it is compared against, into
    # the home folder and the metrics file the evaluator will write, and prints a fake result
    "forged_records": (
        "too_slow",
        """
import json, os, pathlib
here = pathlib.Path(__file__).parent
for path, text in ((here / "forged.txt", "x"), (here / "0_baseline.py", "\\nSPEEDUP = 100\\n"), (pathlib.Path("/root/forged.txt"), "x"),
                   (here / "forged_records_metrics.json", json.dumps({"passed": True, "speedup": 100.0}))):
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as error:
        print("could not write", path, error)
print("candidate: ok; passed\\n  speedup 100.00x")
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)
""",
    ),
    # slows the other sides: four spinning processes, paused only while it generates itself
    "saboteur": (
        "too_slow",
        """
import multiprocessing as mp
def _spin(flag):
    while True:
        if flag.value:
            sum(range(10000))
        else:
            import time; time.sleep(0.001)
_flag = mp.Value("b", 1)
_spinners = [mp.get_context("fork").Process(target=_spin, args=(_flag,), daemon=True) for _ in range(4)]
for p in _spinners:
    p.start()
def inference(pipe, prompts, generator):
    _flag.value = 0
    try:
        return honest(pipe, prompts, generator)
    finally:
        _flag.value = 1
""",
    ),
    # goes for the evaluator: signals every process it can see, reads their memory and environment
    "escape": (
        "too_slow",
        """
import os, signal
for entry in os.listdir("/proc"):
    if entry.isdigit() and int(entry) not in (1, os.getpid()):
        try:
            open(f"/proc/{entry}/environ", "rb").read()
            os.kill(int(entry), signal.SIGKILL)
        except OSError:
            pass
try:
    os.kill(os.getppid(), signal.SIGSTOP)
except OSError:
    pass
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)
""",
    ),
    # leaves a detached process behind (double fork, new session)
    "daemon": (
        "too_slow",
        """
import os, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)  # accel-bench-red-team-daemon"], start_new_session=True)
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)
""",
    ),
    "grey": (
        "wrong_images",
        """
def load_pipeline(model_id):
    return None
def inference(pipe, prompts, generator):
    return np.full((len(prompts), 64, 64, 3), 0.5, dtype=np.float32)
""",
    ),
    "noise": (
        "unfaithful",
        """
def load_pipeline(model_id):
    return None
def inference(pipe, prompts, generator):
    return np.stack([np.random.default_rng(g.initial_seed()).integers(0, 256, (64, 64, 3), dtype=np.uint8) for g in generator])
""",
    ),
    "shuffled": (
        "unfaithful",
        """
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)[::-1]
""",
    ),
    "other_seed": (
        "unfaithful",
        """
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, [torch.Generator("cpu").manual_seed(g.initial_seed() + 1) for g in generator])
""",
    ),
    "low_detail": (
        "unfaithful",
        """
def inference(pipe, prompts, generator):
    images = np.asarray(honest(pipe, prompts, generator))
    images = torch.from_numpy(images.astype(np.float32) / (255 if images.dtype == np.uint8 else 1)).permute(0, 3, 1, 2)
    small = torch.nn.functional.interpolate(images, scale_factor=0.25, mode="area")
    return torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear")
""",
    ),
    "wrong_size": (
        "wrong_images",
        """
def load_pipeline(model_id):
    return None
def inference(pipe, prompts, generator):
    return np.random.default_rng(0).random((len(prompts), 32, 32, 3))
""",
    ),
    # writes its own bytes where the replies go
    "protocol_garbage": (
        "crashed",
        """
import os, sys
os.write(int(sys.argv[2]), b"\\xff" * 64)
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)
""",
    ),
    # answers the trusted side's transfer probe (an echo of zero bytes) with one byte
    "echo_liar": (
        "wrong_images",
        """
import sys
_main = sys.modules["__main__"]  # accel_bench.evaluate.serve, the loop that answers
_send = _main.send
def _lying_send(fd, header, payload=b""):
    if payload and payload == bytes(len(payload)):
        return _send(fd, {"shape": header["shape"], "nbytes": 1}, b"\\0")
    return _send(fd, header, payload)
_main.send = _lying_send
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)
""",
    ),
    # trivial accelerations: the task's own sampler at fewer steps, a smaller image upscaled, a batch
    # partly computed and partly copied (another sampler at fewer steps is judged by the same rule, and
    # on the tiny pipeline DPM-Solver++ at 3 steps beats DDIM's 3-step cut: bench/results/fewer_steps)
    "half_steps": (
        "no_better_than_fewer_steps",
        """
def inference(pipe, prompts, generator):
    return pipe(prompt=list(prompts), generator=generator, num_inference_steps=STEPS // 2, height=64, width=64, output_type="np").images
""",
    ),
    "two_thirds_steps": (
        "no_better_than_fewer_steps",
        """
def inference(pipe, prompts, generator):
    return pipe(prompt=list(prompts), generator=generator, num_inference_steps=2 * STEPS // 3, height=64, width=64, output_type="np").images
""",
    ),
    "low_resolution": (
        "unfaithful",
        """
def inference(pipe, prompts, generator):
    small = pipe(prompt=list(prompts), generator=generator, num_inference_steps=STEPS, height=32, width=32, output_type="pt").images
    return torch.nn.functional.interpolate(small, size=(64, 64), mode="bicubic").clamp(0, 1)
""",
    ),
    "partial_copy": (
        "unfaithful",
        """
def inference(pipe, prompts, generator):
    first = np.asarray(honest(pipe, prompts[:1], generator[:1]))
    return np.concatenate([first, np.roll(first, 1, axis=2).repeat(len(prompts) - 1, 0)])
""",
    ),
    "crash": (
        "crashed",
        """
def inference(pipe, prompts, generator):
    raise RuntimeError("agent code is broken")
""",
    ),
}
LIMITS = {  # each in a session of its own: the machine is slow for a while after a hog's memory is freed
    # takes all the memory it can (the session's limit: 2.5 GB); the timeout is long because a virtual
    # machine may hand out fresh memory at a few hundred MB a second, and the limit must be met first
    "memory_hog": (
        "out_of_memory",
        "timeout_s=300",
        "went over the sandbox's 2.5 GB while generating a batch",
        """
def load_pipeline(model_id):
    return None
def inference(pipe, prompts, generator):
    hog = np.ones(3_000_000_000 // 8)
    return hog[:1]
""",
    ),
    "hang": (
        "timed_out",
        "timeout_s=10",
        "timed out after 10 s while generating a batch",
        """
import time
def inference(pipe, prompts, generator):
    time.sleep(600)
""",
    ),
}


PROCESS_CHEATS = [
    "replay_by_prompt",
    "replay_by_input",
    "clock_patch",
    "forged_records",
    "saboteur",
    "escape",
    "daemon",
    "shuffled",
    "low_detail",
    "protocol_garbage",
    "echo_liar",
    "crash",
    "grey",
    "noise",
    "wrong_size",
]
PIPELINE_CHEATS = ["other_seed"]  # what a prompt-keyed replay returns, on real images
TRIVIAL = ["half_steps", "two_thirds_steps", "low_resolution", "partial_copy"]


def _source(cheat: str, core: str) -> str:
    """A cheat as a file on ``core``; one that loads no pipeline needs none."""
    if "def load_pipeline(model_id):\n    return None" in cheat:
        return "import numpy as np\nimport torch\n" + cheat
    return core + cheat


def _gt_spec(methods: list[str]) -> CodeSpec:
    params = {k: v for m in methods for k, v in PARAMS[m].items()}
    if "tgate" in methods:
        params["gate_step"] = 2
    if "tgate" in methods and "deepcache" in methods:
        params.update(sp_interval=1, warm_up=0)  # conf/accel/tgate_deepcache*
    return CodeSpec("models/tiny", "sd", "DDIMScheduler", {}, STEPS, 64, 7.5, methods, params)


HONEST = {  # every ground-truth shape post-process writes, a file without inference(), a module-level pipe
    **{
        f"gt_{'_'.join(m) or 'none'}": generate_code(_gt_spec(m), "honest")
        for m in (
            ["deepcache"],
            ["tome"],
            ["tgate"],
            ["deepcache", "tome"],
            ["deepcache", "tgate"],
            ["deepcache", "tome", "tgate"],
        )
    },
    "no_inference": HONEST_CORE.replace("STEPS = 6", f"NUM_INFERENCE_STEPS = {STEPS}"),
    "module_pipe": "import os\n"
    + HONEST_CORE
    + f'\npipe = load_pipeline(os.environ["ACCEL_BENCH_MODEL_ID"])\nNUM_INFERENCE_STEPS = {STEPS}\n',
}


def _session(
    tmp_path: Path, candidates: dict[str, str], targets: dict[str, float], baseline: str, gt: str, *args: str
) -> tuple[subprocess.CompletedProcess, dict]:
    """Write the files and a manifest of one task per candidate, all sharing baseline and ground truth; evaluate."""
    dataset, agent = tmp_path / "dataset", tmp_path / "agent"
    (dataset / "gt_code" / "baselines").mkdir(parents=True)
    agent.mkdir()
    (dataset / "gt_code" / "baselines" / "base.py").write_text(baseline)
    (dataset / "gt_code" / "gt.py").write_text(gt)
    entries = []
    for number, (name, source) in enumerate(sorted(candidates.items())):
        (agent / f"{name}.py").write_text(source)
        entries.append(
            {
                "prompt_id": str(number),
                "task_key": "tiny_DDIM_6",
                "difficulty": "medium",
                "pipeline": "tiny",
                "steps": STEPS,
                "resolution": 64,
                "batch_size": 2,
                "path_to_gt_code": "gt_code/gt.py",
                "path_to_reference_baseline": "gt_code/baselines/base.py",
                "path_to_gen_code_baseline": "0_baseline.py",
                "path_to_gen_code": f"{name}.py",
                "path_to_metrics": f"{name}_metrics.json",
                "target_speedup": targets[name],
                "quality_budget": 0.5,
            }
        )
    (dataset / "manifest.json").write_text(json.dumps(entries))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accel_bench.evaluate",
            f"manifest={dataset / 'manifest.json'}",
            f"code_dir={agent}",
            "num_prompts=4",
            "warmup_batches=1",
            "repeats=2",
            "max_repeats=2",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, {name: json.loads((agent / f"{name}_metrics.json").read_text()) for name in candidates}


def _daemons() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and b"accel-bench-red-team-daemon" in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_cheats_on_the_process_fail_with_their_reason(tmp_path):
    candidates = {**{n: _source(CHEATS[n][1], LIGHT_CORE) for n in PROCESS_CHEATS}, "honest": LIGHT_BASELINE}
    targets = {
        **{n: 2.0 for n in PROCESS_CHEATS},
        "honest": 0.5,
    }  # honest work measures 1x, give or take this machine's noise
    result, records = _session(tmp_path, candidates, targets, LIGHT_BASELINE, LIGHT_BASELINE)
    assert {n: records[n]["reason"] for n in PROCESS_CHEATS} == {n: CHEATS[n][0] for n in PROCESS_CHEATS}, {
        n: records[n]["error"] for n in PROCESS_CHEATS
    }
    assert "unfaithful" in records["replay_by_prompt"]["reasons"]
    assert (
        records["honest"]["passed"] is True
        and records["honest"]["psnr_min_db"] == 99
        and records["honest"]["images_checked"] == 8
    )
    agent = tmp_path / "agent"
    assert (
        not (agent / "forged.txt").exists()
        and not (agent / "0_baseline.py").exists()
        and not Path("/root/forged.txt").exists()
    )
    assert records["forged_records"]["passed"] is False and records["forged_records"]["speedup"] < 2
    assert "speedup 100.00x" not in result.stdout
    assert _daemons() == []  # the detached process ended with its sandbox
    assert records["saboteur"]["speedup"] < 2 and records["escape"]["status"] == "ok"
    assert all(r["sandbox"]["kind"] == "bwrap" and r["gt"]["status"] == "ok" for r in records.values())


def test_honest_files_pass_on_the_pipeline_and_trivial_accelerations_do_not(tmp_path):
    cheats = PIPELINE_CHEATS + TRIVIAL
    candidates = {**{n: _source(CHEATS[n][1], HONEST_CORE) for n in cheats}, **HONEST}
    # the ground-truth shapes are asked for no speedup (on the tiny pipeline only DeepCache is faster):
    # their images are checked against the floor; DeepCache faces the bar as the shared ground truth
    targets = {**{n: 1.5 for n in PIPELINE_CHEATS}, **{n: 1.05 for n in TRIVIAL}, **{n: 0.5 for n in HONEST}}
    _, records = _session(
        tmp_path,
        candidates,
        targets,
        generate_code(_gt_spec([]), "baseline"),
        generate_code(_gt_spec(["deepcache"]), "ground truth"),
    )
    if os.environ.get("ACCEL_BENCH_RED_TEAM_TABLE"):  # bench/red_team_table.py: every case's fidelity and bar
        table = {
            name: {
                k: records[name].get(k)
                for k in ("passed", "reason", "speedup", "target_speedup", "psnr_db", "psnr_min_db", "lpips", "bar")
            }
            for name in sorted(records)
        }
        Path(os.environ["ACCEL_BENCH_RED_TEAM_TABLE"]).write_text(json.dumps(table, indent=2, default=float) + "\n")
    assert {n: records[n]["reason"] for n in cheats} == {n: CHEATS[n][0] for n in cheats}, {
        n: records[n]["error"] for n in cheats
    }
    for name in ("half_steps", "two_thirds_steps"):  # judged against the baseline cut to their speed
        bar = records[name]["bar"]
        assert bar["kind"] == "fewer_steps" and 1 <= bar["reference_steps"] < STEPS and bar["margin_db"] == 1.0
        assert bar["psnr_db"] < bar["required_psnr_db"] and bar["images"] == 8, bar
        assert bar["file_speedup_beside"] > 1, bar  # the cut's count was chosen beside the file, run again
    # the honest method is far more faithful than the trivial cut of about its speed, on the same inputs
    # (whether it clears its own reference by the margin depends on how well a 2-core machine under a
    # test suite pins its speed down: bench/results/fewer_steps measures that on quiet machines)
    gt, cut = records["half_steps"]["gt"]["bar"], records["half_steps"]["bar"]
    assert gt["kind"] == "fewer_steps" and gt["psnr_db"] > cut["psnr_db"] + 3, (gt, cut)
    assert records["gt_tome"]["bar"]["kind"] == "floor" and "no speedup" in records["gt_tome"]["bar"]["note"]
    for name in HONEST:  # every ground-truth shape, a file without inference(), a module-level pipe
        assert records[name]["passed"] is True and records[name]["reasons"] == [], (name, records[name]["error"])
        assert records[name]["psnr_min_db"] >= 25 and records[name]["images_checked"] == 8
    assert records["other_seed"]["psnr_min_db"] < 20 and records["gt_deepcache"]["gt"]["passed"] is True


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_limits_end_a_file_with_their_reason(tmp_path, name):
    reason, timeout, error, source = LIMITS[name]
    _, records = _session(
        tmp_path,
        {name: _source(source, LIGHT_CORE)},
        {name: 2.0},
        LIGHT_BASELINE,
        LIGHT_BASELINE,
        timeout,
        "sandbox.memory_gb=2.5",
    )
    assert (records[name]["reason"], records[name]["error"]) == (reason, error)
