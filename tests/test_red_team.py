"""The red team: candidates that accelerate nothing and try to be credited anyway, each of which must
fail with its reason, beside honest files (every ground-truth shape post-process writes) that must
pass unchanged. Classes from issue 16 and its anchors (reference-kernels #162, kernelbot #501,
KernelBench #82, flashinfer-bench-starter-kit #21): output replay keyed by prompt or by input, a
patched clock, forged result files and console lines, blank / noise / shuffled / other-seed /
low-detail / wrong-size images, processes left running, work that slows the other sides, attacks
on the evaluator's processes, protocol abuse, hangs, memory exhaustion.

Each session is one real ``python -m accel_bench.evaluate`` over a hand-written manifest whose tasks
share one baseline and one ground truth: all candidates of a session are measured interleaved in one
comparison, in the bubblewrap sandbox, on the tiny pipeline.
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

HONEST_CORE = f'''
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
'''

CHEATS = {
    # output replay keyed by prompt (flashinfer #21's fingerprint cache): fresh seeds make the replay another seed's image
    # (the replayed image is another input's: the same image for two inputs, and unfaithful to both)
    "replay_by_prompt": ("wrong_images", '''
CACHE = {}
def inference(pipe, prompts, generator):
    todo = [i for i, p in enumerate(prompts) if p not in CACHE]
    if todo:
        images = honest(pipe, [prompts[i] for i in todo], [generator[i] for i in todo])
        CACHE.update({prompts[i]: image for i, image in zip(todo, images)})
    return np.stack([CACHE[p] for p in prompts])
'''),
    # replay keyed by the whole input, precomputed at load for the seeds run.py would use: never hit
    "replay_by_input": ("too_slow", '''
from accel_bench.measure import prompt_seed
from accel_bench.prompts import load_prompts
CACHE = {}
_load = load_pipeline
def load_pipeline(model_id, device="cpu", dtype=torch.float32):
    pipe = _load(model_id, device, dtype)
    for i, prompt in enumerate(load_prompts({"source": "builtin", "path": None})[:4]):
        seed = prompt_seed(0, i)
        CACHE[(prompt, seed)] = honest(pipe, [prompt], [torch.Generator("cpu").manual_seed(seed)])[0]
    return pipe
def inference(pipe, prompts, generator):
    keys = [(p, g.initial_seed()) for p, g in zip(prompts, generator)]
    if all(k in CACHE for k in keys):
        return np.stack([CACHE[k] for k in keys])
    return honest(pipe, prompts, generator)
'''),
    # reference-kernels #162: the process's clocks run ten times slow
    "clock_patch": ("too_slow", '''
import time
for name in ("perf_counter", "monotonic", "time", "process_time"):
    real = getattr(time, name)
    setattr(time, name, (lambda real: (lambda: real() / 10))(real))
for name in ("perf_counter_ns", "monotonic_ns", "time_ns"):
    real = getattr(time, name)
    setattr(time, name, (lambda real: (lambda: real() // 10))(real))
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)
'''),
    # forged records: writes beside the code files, into the baseline it is compared against, into
    # the home folder and the metrics file the evaluator will write, and prints a fake result
    "forged_records": ("too_slow", '''
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
'''),
    # slows the other sides: four spinning processes, paused only while it generates itself
    "saboteur": ("too_slow", '''
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
'''),
    # goes for the evaluator: signals every process it can see, reads their memory and environment
    "escape": ("too_slow", '''
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
'''),
    # leaves a detached process behind (double fork, new session)
    "daemon": ("too_slow", '''
import os, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)  # accel-bench-red-team-daemon"], start_new_session=True)
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)
'''),
    "grey": ("wrong_images", '''
def load_pipeline(model_id):
    return None
def inference(pipe, prompts, generator):
    return np.full((len(prompts), 64, 64, 3), 0.5, dtype=np.float32)
'''),
    "noise": ("unfaithful", '''
def load_pipeline(model_id):
    return None
def inference(pipe, prompts, generator):
    return np.stack([np.random.default_rng(g.initial_seed()).integers(0, 256, (64, 64, 3), dtype=np.uint8) for g in generator])
'''),
    "shuffled": ("unfaithful", '''
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)[::-1]
'''),
    "other_seed": ("unfaithful", '''
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, [torch.Generator("cpu").manual_seed(g.initial_seed() + 1) for g in generator])
'''),
    "low_detail": ("unfaithful", '''
def inference(pipe, prompts, generator):
    images = torch.from_numpy(honest(pipe, prompts, generator)).permute(0, 3, 1, 2)
    small = torch.nn.functional.interpolate(images, scale_factor=0.25, mode="area")
    return torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear")
'''),
    "wrong_size": ("wrong_images", '''
def load_pipeline(model_id):
    return None
def inference(pipe, prompts, generator):
    return np.random.default_rng(0).random((len(prompts), 32, 32, 3))
'''),
    # writes its own bytes where the replies go
    "protocol_garbage": ("crashed", '''
import os, sys
os.write(int(sys.argv[2]), b"\\xff" * 64)
def inference(pipe, prompts, generator):
    return honest(pipe, prompts, generator)
'''),
    "crash": ("crashed", '''
def inference(pipe, prompts, generator):
    raise RuntimeError("agent code is broken")
'''),
}
LIMITS = {
    "hang": ("timed_out", '''
import time
def inference(pipe, prompts, generator):
    time.sleep(600)
'''),
    "memory_hog": ("out_of_memory", '''
def load_pipeline(model_id):
    return None
def inference(pipe, prompts, generator):
    hog = np.ones(3_000_000_000 // 8)
    return hog[:1]
'''),
}


def _source(cheat: str) -> str:
    """A cheat as a file, on the honest core; one that loads no pipeline skips diffusers (a faster start)."""
    if "def load_pipeline(model_id):\n    return None" in cheat:
        return "import numpy as np\nimport torch\n" + cheat
    return HONEST_CORE + cheat


def _gt_spec(methods: list[str]) -> CodeSpec:
    params = {k: v for m in methods for k, v in PARAMS[m].items()}
    if "tgate" in methods:
        params["gate_step"] = 2
    if "tgate" in methods and "deepcache" in methods:
        params.update(sp_interval=1, warm_up=0)  # conf/accel/tgate_deepcache*
    return CodeSpec("models/tiny", "sd", "DDIMScheduler", {}, STEPS, 64, 7.5, methods, params)


HONEST = {  # every ground-truth shape post-process writes, a file without inference(), a module-level pipe
    **{f"gt_{'_'.join(m) or 'none'}": generate_code(_gt_spec(m), "honest") for m in
       (["deepcache"], ["tome"], ["tgate"], ["deepcache", "tome"], ["deepcache", "tgate"], ["deepcache", "tome", "tgate"])},
    "no_inference": HONEST_CORE.replace("STEPS = 6", f"NUM_INFERENCE_STEPS = {STEPS}"),
    "module_pipe": "import os\n" + HONEST_CORE + f'\npipe = load_pipeline(os.environ["ACCEL_BENCH_MODEL_ID"])\nNUM_INFERENCE_STEPS = {STEPS}\n',
}


def _session(tmp_path: Path, candidates: dict[str, str], targets: dict[str, float], *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Write the files and a manifest of one task per candidate, all sharing baseline and ground truth; evaluate."""
    dataset, agent = tmp_path / "dataset", tmp_path / "agent"
    (dataset / "gt_code" / "baselines").mkdir(parents=True)
    agent.mkdir()
    (dataset / "gt_code" / "baselines" / "base.py").write_text(generate_code(_gt_spec([]), "baseline"))
    (dataset / "gt_code" / "gt.py").write_text(generate_code(_gt_spec(["deepcache"]), "ground truth"))
    entries = []
    for number, (name, source) in enumerate(sorted(candidates.items())):
        (agent / f"{name}.py").write_text(source)
        entries.append({"prompt_id": str(number), "task_key": "tiny_DDIM_6", "difficulty": "medium", "pipeline": "tiny", "steps": STEPS,
                        "resolution": 64, "batch_size": 2, "path_to_gt_code": "gt_code/gt.py",
                        "path_to_reference_baseline": "gt_code/baselines/base.py", "path_to_gen_code_baseline": "0_baseline.py",
                        "path_to_gen_code": f"{name}.py", "path_to_metrics": f"{name}_metrics.json",
                        "target_speedup": targets[name], "quality_budget": 0.5})
    (dataset / "manifest.json").write_text(json.dumps(entries))
    result = subprocess.run([sys.executable, "-m", "accel_bench.evaluate", f"manifest={dataset / 'manifest.json'}", f"code_dir={agent}",
                             "num_prompts=4", "warmup_batches=1", "repeats=2", "max_repeats=2", *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
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


@pytest.mark.parametrize("names", [["replay_by_prompt", "replay_by_input", "clock_patch", "forged_records", "saboteur", "escape", "daemon"],
                                   ["grey", "noise", "shuffled", "other_seed", "low_detail", "wrong_size", "protocol_garbage", "crash"]],
                         ids=["process-cheats", "image-cheats"])
def test_cheats_fail_with_their_reason(tmp_path, names):
    honest = dict(sorted(HONEST.items())[: 4] if "grey" in names else sorted(HONEST.items())[4:])
    candidates = {**{n: _source(CHEATS[n][1]) for n in names}, **honest}
    targets = {**{n: 1.5 for n in names}, **{n: 0.5 for n in honest}}
    result, records = _session(tmp_path, candidates, targets)
    got = {n: records[n]["reason"] for n in names}
    assert got == {n: CHEATS[n][0] for n in names}, {n: records[n]["error"] for n in names}
    assert "unfaithful" in records.get("replay_by_prompt", {"reasons": ["unfaithful"]})["reasons"]
    for name in honest:  # honest files beside the cheats pass unchanged
        assert records[name]["passed"] is True and records[name]["reasons"] == [], (name, records[name]["error"])
        assert records[name]["psnr_min_db"] >= 25 and records[name]["images_checked"] == 8
    for record in records.values():
        assert record["gt"]["status"] == "ok" and record["sandbox"]["kind"] == "bwrap"
    if "forged_records" in names:
        agent = tmp_path / "agent"
        assert not (agent / "forged.txt").exists() and not (agent / "0_baseline.py").exists() and not Path("/root/forged.txt").exists()
        assert records["forged_records"]["passed"] is False and records["forged_records"]["speedup"] < 1.5
        assert "speedup 100.00x" not in result.stdout
        assert _daemons() == []  # the detached process ended with its sandbox
        assert records["saboteur"]["speedup"] < 1.5 and records["escape"]["status"] == "ok"


def test_limits_end_a_file_with_their_reason(tmp_path):
    candidates = {n: _source(source) for n, (_, source) in LIMITS.items()}
    _, records = _session(tmp_path, candidates, {n: 1.5 for n in candidates}, "timeout_s=15", "sandbox.memory_gb=2.5")
    assert {n: records[n]["reason"] for n in LIMITS} == {n: reason for n, (reason, _) in LIMITS.items()}
    assert records["hang"]["error"] == "timed out after 15 s while generating a batch"
