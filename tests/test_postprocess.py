"""Post-process: selection under budgets and ties, coverage gaps, plots, generated code that runs
with the right steps / sampler / parameters, determinism and id stability."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._inductor.config

from accel_bench.accelerators import METHODS
from accel_bench.config import compose_run_config
from accel_bench.postprocess.codegen import CodeSpec, generate_code
from accel_bench.postprocess.manifest import assign_ids, target_speedups
from accel_bench.postprocess.plots import pareto_front
from accel_bench.postprocess.records import read_summaries
from accel_bench.postprocess.select import candidates, gaps, select
from accel_bench.postprocess.verify import VerificationError, verify_file
from accel_bench.record import Row, Side, upsert_summary

from .conftest import ACCELS, FAST, FORKS, run_cli

PARAMS = {
    "deepcache": {"cache_interval": 3, "cache_branch_id": 1},
    "tome": {"ratio": 0.4, "max_downsample": 2, "sx": 2, "sy": 2, "use_rand": True},
    "tgate": {"gate_step": 10, "sp_interval": 3, "fi_interval": 1, "warm_up": 0},
    "compile": {
        "mode": "default",
        "fullgraph": False,
        "compile_targets": ["vae_decoder"],
    },  # the tiny decoder compiles in seconds
    "fused_qkv": {},
    "channels_last": {},
    "sdpa": {"sdpa_backend": "math"},
    "quantize": {"quantization": "int8_dynamic", "quantize_targets": ["unet"]},
}
PIPELINES = {
    "tiny": dict(pipeline_label="tiny", family="sd"),
    "tiny_xl": dict(pipeline_label="tiny_xl", family="sdxl"),
}
SCHEDULERS = {
    "ddim": dict(scheduler_class="DDIMScheduler", scheduler_label="DDIM", scheduler_kwargs={}),
    "dpmsolver": dict(
        scheduler_class="DPMSolverMultistepScheduler",
        scheduler_label="DPM-Solver++",
        scheduler_kwargs={"algorithm_type": "dpmsolver++"},
    ),
    "unipc": dict(scheduler_class="UniPCMultistepScheduler", scheduler_label="UniPC", scheduler_kwargs={}),
}
_counter = iter(range(10**6))


def row(
    accel="deepcache",
    pipeline="tiny",
    scheduler="ddim",
    steps=25,
    speedup=2.0,
    clip_loss=0.01,
    weights="random",
    status="ok",
    **extra,
):
    methods = [m for m in METHODS if m in compose_run_config([f"accel={accel}"]).accel.methods]
    params = {k: v for m in methods for k, v in PARAMS[m].items()}
    number = next(_counter)
    fields = dict(
        run_id=f"run{number:04d}",
        timestamp="2026-11-23T00:00:00+00:00",
        status=status,
        pipeline=pipeline,
        weights=weights,
        scheduler=scheduler,
        steps=steps,
        batch_size=2,
        num_images=4,
        resolution=64,
        accel=accel,
        accel_params=params,
        seed=0,
        device="cpu",
        dtype="fp32",
        latency_s=1.0 / speedup,
        base_latency_s=1.0,
        speedup=speedup,
        clip_loss=clip_loss,
        psnr_db=30.0,
        ssim=0.9,
        clip_weights=weights,
        accel_methods=methods,
        guidance_scale=7.5,
        model_id=None,
        device_name="test CPU",
        run_dir=f"sweep/{number}",
        **PIPELINES[pipeline],
        **SCHEDULERS[scheduler],
    )
    fields.update(extra)
    if status != "ok":
        for key in ("speedup", "clip_loss", "latency_s", "base_latency_s", "psnr_db", "ssim"):
            fields[key] = None
    sides = dict(accelerated=Side(latency_s=fields.pop("latency_s")), base=Side(latency_s=fields.pop("base_latency_s")))
    return Row(**fields, **sides)


def write_sweep(folder: Path, rows) -> Path:
    for r in rows:
        upsert_summary(folder / "summary.csv", r)
    return folder


def measured_of(tmp_path, rows):
    return read_summaries([write_sweep(tmp_path / "sweep", rows)])


def test_selection_takes_the_fastest_within_each_budget(tmp_path):
    measured, _ = measured_of(
        tmp_path,
        [
            row(speedup=3.0, clip_loss=0.04),
            row(accel="tome", speedup=1.8, clip_loss=0.005),
            row(accel="tgate", speedup=2.2, clip_loss=0.015),
            row(accel="none", speedup=1.02, clip_loss=0.0),  # a control, never a result
            row(accel="tgate_tome", speedup=0.9, clip_loss=-0.01),  # slower than the baseline
        ],
    )
    entries = select(measured, [0.01, 0.02, 0.05], include_random=True)
    assert [(e.quality_budget, e.accel, e.speedup) for e in entries] == [
        (0.01, "tome", 1.8),
        (0.02, "tgate", 2.2),
        (0.05, "deepcache", 3.0),
    ]
    assert select(measured, [0.05], include_random=False) == []  # random weights are admitted only on request


def test_rows_over_a_compiled_baseline_make_no_tasks(tmp_path):
    """A task's baseline code is the eager pipeline: a speedup over a compiled one is no target for it."""
    measured, statuses = measured_of(
        tmp_path,
        [row(speedup=2.0, baseline="eager"), row(speedup=9.0, baseline="compile:reduce-overhead"), row(speedup=1.5)],
    )  # a row of an accel_bench before compiled baselines
    assert sorted(m.speedup for m in measured) == [1.5, 2.0] and len(statuses) == 2


@pytest.mark.parametrize("method", ["deepcache", "tome", "tgate"])
def test_a_method_made_graph_safe_on_a_compiled_unet_makes_no_task(tmp_path, method):
    """Its speed is cached_steps' two graphs, or the host's draws, or the kept forwards, which a generated
    file does not carry: no ground truth for it."""
    on_unet = row(
        accel=f"{method}_compile",
        speedup=3.0,
        accel_params={**PARAMS[method], **PARAMS["compile"], "compile_targets": ["unet"]},
    )
    measured, _ = measured_of(
        tmp_path, [on_unet, row(accel=f"{method}_compile", speedup=2.5)]
    )  # the decoder compiled: a task
    assert [m.speedup for m in measured] == [2.5]


def test_ties_are_broken_deterministically(tmp_path):
    rows = [
        row(accel="tome", speedup=2.0, clip_loss=0.01),
        row(accel="deepcache", speedup=2.0, clip_loss=0.01),
        row(accel="tgate", speedup=2.0, clip_loss=0.005),
    ]
    measured, _ = measured_of(tmp_path, rows)
    (entry,) = select(measured, [0.02], include_random=True)
    assert entry.accel == "tgate"  # equal speedup: the lower loss wins
    (entry,) = select(list(reversed(measured))[1:], [0.02], include_random=True)
    assert entry.accel == "deepcache"  # then by name, whatever the input order
    (again,) = select(measured[:2], [0.02], include_random=True)
    assert again.accel == "deepcache"


def test_gaps_say_why(tmp_path):
    measured, statuses = measured_of(
        tmp_path,
        [
            row(scheduler="ddim", speedup=2.0, clip_loss=0.2),
            row(scheduler="unipc", status="failed", error="OOM"),
            row(scheduler="dpmsolver", accel="none", speedup=1.0, clip_loss=0.0),
            row(scheduler="ddim", pipeline="tiny_xl", speedup=2.0, clip_loss=0.0, weights="random"),
        ],
    )
    grid = [
        ("tiny", "ddim", 25),
        ("tiny", "unipc", 25),
        ("tiny", "dpmsolver", 25),
        ("tiny", "ddim", 50),
        ("tiny_xl", "ddim", 25),
    ]
    reasons = {
        (g.pipeline, g.scheduler, g.steps): g.reason
        for g in gaps(grid, [0.02], measured, statuses, [], include_random=False)
    }
    assert reasons[("tiny", "ddim", 50)] == "no rows in the sweeps"
    assert reasons[("tiny", "unipc", 25)] == "no ok rows (1 failed)"
    assert "include_random=true" in reasons[("tiny_xl", "ddim", 25)]
    entries = select(measured, [0.02], include_random=True)
    reasons = {
        (g.pipeline, g.scheduler, g.steps): g.reason
        for g in gaps(grid, [0.02], measured, statuses, entries, include_random=True)
    }
    assert reasons[("tiny", "dpmsolver", 25)] == "no accelerated row faster than its baseline"
    assert reasons[("tiny", "ddim", 25)].startswith(
        "no accelerated row within the budget (lowest CLIP loss among faster rows: 0.2000"
    )
    assert ("tiny_xl", "ddim", 25) not in reasons


@pytest.mark.parametrize(
    "speedup, expected",
    [
        (2.0, {"easy": 1.5, "medium": 2.0, "hard": 2.5}),
        (3.3, {"easy": 3.0, "medium": 3.5, "hard": 4.0}),
        (5.0, {"easy": 4.5, "medium": 5.0, "hard": 5.5}),
        (1.3, {"medium": 1.5, "hard": 2.0}),
        (1.2, {"hard": 1.5}),
    ],
)
def test_three_distinct_targets_rounded_to_halves(speedup, expected):
    assert target_speedups(speedup) == expected


def test_pareto_front():
    points = [(0.0, 1.5), (0.01, 2.0), (0.02, 1.8), (0.03, 3.0), (0.03, 2.5)]
    assert pareto_front(points, lower_x_is_better=True) == [(0.0, 1.5), (0.01, 2.0), (0.03, 3.0)]


def test_existing_ids_are_kept_and_new_ones_go_above():
    class T:  # assign_ids needs only the ordered file names
        def __init__(self, name):
            self.original_filename = name

    ids = assign_ids([T("a"), T("b")], 192)
    assert ids == {"a": 192, "b": 193}
    assert assign_ids([T("0"), T("a"), T("c"), T("b")], 192, {"a": 192, "b": 193}) == {
        "a": 192,
        "b": 193,
        "0": 194,
        "c": 195,
    }


def _spec(accel, pipeline, scheduler="dpmsolver", steps=25):
    r = row(accel=accel, pipeline=pipeline, scheduler=scheduler, steps=steps)
    return CodeSpec(
        model_id=None,
        family=r.family,
        scheduler_class=r.scheduler_class,
        scheduler_kwargs=r.scheduler_kwargs,
        steps=steps,
        resolution=64,
        guidance_scale=7.5,
        methods=r.accel_methods,
        params=r.accel_params,
    )


@pytest.mark.parametrize("pipeline", ["tiny", "tiny_xl"])
@pytest.mark.parametrize("accel", ACCELS[1:] + ["deepcache_compile", "fast", "sdpa"])
def test_generated_code_runs_with_its_steps_sampler_and_parameters(tmp_path, pipeline, accel):
    switches = ("flash_sdp", "mem_efficient_sdp", "cudnn_sdp", "math_sdp")  # process-wide: a file may set them
    was = {switch: getattr(torch.backends.cuda, f"{switch}_enabled")() for switch in switches}
    try:
        _generated_code_runs(tmp_path, pipeline, accel)
    finally:
        for switch, enabled in was.items():
            getattr(torch.backends.cuda, f"enable_{switch}")(enabled)


def _generated_code_runs(tmp_path, pipeline, accel):
    spec = _spec(accel, pipeline)
    path = tmp_path / "task.py"
    path.write_text(generate_code(spec, "a task"))
    assert "accel_bench" not in path.read_text()  # standalone
    verify_file(path, spec, cache_dir=os.environ["ACCEL_BENCH_CACHE"])  # runs it: 25 steps, DPM-Solver++

    import runpy

    from accel_bench.pipelines import random_weights_dir

    namespace = runpy.run_path(str(path))
    model = random_weights_dir(pipeline, os.environ["ACCEL_BENCH_CACHE"])
    pipe = namespace["load_pipeline"](model_id=str(model), device="cpu", dtype=torch.float32)
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    params = spec.params
    if "deepcache" in spec.methods:
        assert (pipe.deepcache.params["cache_interval"], pipe.deepcache.params["cache_block_id"]) == (
            3,
            params["cache_branch_id"] // 3,
        )
    if "compile" in spec.methods:
        assert "_compiled_call_impl" in pipe.vae.decoder.__dict__ and "_compiled_call_impl" not in pipe.unet.__dict__
    if "tome" in spec.methods:
        assert pipe.unet._tome_info["args"]["ratio"] == params["ratio"]
        assert pipe.unet._tome_info["args"]["max_downsample"] == params["max_downsample"]
    if "tgate" in spec.methods:
        seen = {}
        original = pipe.tgate

        def recording(**kwargs):
            seen.update(kwargs)
            return original(**kwargs)

        pipe.tgate = recording
        namespace["inference"].__globals__["RESOLUTION"] = None
        namespace["inference"](pipe, ["a cat"], torch.Generator().manual_seed(0))
        assert {k: seen[k] for k in ("gate_step", "sp_interval", "fi_interval", "warm_up", "num_inference_steps")} == {
            **{k: params[k] for k in ("gate_step", "sp_interval", "fi_interval", "warm_up")},
            "num_inference_steps": 25,
        }
    if "fused_qkv" in spec.methods:
        assert pipe.fusing_unet and any(hasattr(m, "to_qkv") for m in pipe.unet.modules())
    if "channels_last" in spec.methods:
        assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    if "quantize" in spec.methods:
        swapped = {
            name: type(m.weight) is not torch.nn.Parameter
            for name, m in pipe.unet.named_modules()
            if type(m) is torch.nn.Linear
        }
        assert {"attentions." in name for name, q in swapped.items() if q} == {True}
        assert not any(q for name, q in swapped.items() if "time_emb" in name)
        assert not torch._inductor.config.coordinate_descent_tuning  # torchao's default would turn it on for good
    if "sdpa" in spec.methods:
        assert (torch.backends.cuda.math_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == (True, False)


def test_verification_catches_a_file_that_disagrees_with_its_entry(tmp_path):
    spec = _spec("deepcache", "tiny", scheduler="ddim", steps=25)
    path = tmp_path / "task.py"
    path.write_text(generate_code(spec, "a task").replace("NUM_INFERENCE_STEPS = 25", "NUM_INFERENCE_STEPS = 20"))
    with pytest.raises(VerificationError, match="NUM_INFERENCE_STEPS=20, expected 25"):
        verify_file(path, spec, cache_dir=os.environ["ACCEL_BENCH_CACHE"])
    path.write_text(
        generate_code(spec, "a task").replace("num_inference_steps=NUM_INFERENCE_STEPS", "num_inference_steps=20")
    )
    with pytest.raises(VerificationError, match="ran 20 steps, expected 25"):
        verify_file(path, spec, cache_dir=os.environ["ACCEL_BENCH_CACHE"])


def _postprocess(args, cwd):
    return FORKS.run(["-m", "accel_bench.postprocess", *args], cwd, 600)


GRID = ["grid.pipelines=[tiny,tiny_xl]", "grid.schedulers=[ddim,unipc]", "grid.steps=[25]"]


def test_postprocess_end_to_end_is_deterministic_and_keeps_ids(tmp_path):
    write_sweep(
        tmp_path / "a",
        [
            row(speedup=2.1, clip_loss=0.01),
            row(accel="tgate", speedup=2.6, clip_loss=0.04),
            row(pipeline="tiny_xl", accel="tgate_deepcache_tome", scheduler="unipc", speedup=3.2, clip_loss=0.015),
            row(pipeline="tiny_xl", scheduler="ddim", status="invalid", error="accel.cache_branch_id=9 ..."),
        ],
    )
    common = ["sweep_dir=a", "include_random=true", "budgets=[0.02,0.05]", *GRID]
    first = _postprocess([*common, "out_dir=first", "bar_check=false"], tmp_path)  # judged in its own test
    assert first.returncode == 0, first.stderr[-3000:]
    assert "MISSING: 4 grid combination(s)" in first.stderr and "no ok rows (1 invalid)" in first.stderr
    second = _postprocess([*common, "out_dir=second", "verify=false"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    out = tmp_path / "first"
    files = ["search_params.json", "manifest.json", "file_id_mapping.json", "coverage.csv"]
    files += [str(p.relative_to(out)) for p in sorted((out / "gt_code").rglob("*.py"))]
    for name in files:
        assert (out / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name

    search = json.loads((out / "search_params.json").read_text())
    assert [(e["pipeline"], e["scheduler"], e["quality_budget"], e["accel"]) for e in search["entries"]] == [
        ("tiny", "ddim", 0.02, "deepcache"),
        ("tiny", "ddim", 0.05, "tgate"),
        ("tiny_xl", "unipc", 0.02, "tgate_deepcache_tome"),
        ("tiny_xl", "unipc", 0.05, "tgate_deepcache_tome"),
    ]
    assert all(e["weights"] == "random" and "random weights" in e["note"] for e in search["entries"])
    assert {(m["pipeline"], m["scheduler"]) for m in search["missing"]} == {("tiny", "unipc"), ("tiny_xl", "ddim")}
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["tiny_ddim_25_bs2.png", "tiny_xl_unipc_25_bs2.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in (out / "plots").iterdir())

    manifest = json.loads((out / "manifest.json").read_text())
    assert f"4 entries, {len(manifest)} tasks, 2 plots -> " in first.stdout
    assert [m["prompt_id"] for m in manifest] == [str(i) for i in range(192, 192 + len(manifest))]
    assert [m["task_key"] for m in manifest] == sorted(m["task_key"] for m in manifest)
    first_key = [m for m in manifest if m["task_key"] == "tiny_DDIM_25"]
    assert [m["speedup"] for m in first_key] == sorted(m["speedup"] for m in first_key)
    for m in manifest:
        assert m["path_to_gt_code"] == f"gt_code/{m['prompt_id']}.py" and (out / m["path_to_gt_code"]).exists()
        assert (m["path_to_gen_code"], m["path_to_metrics"]) == (
            f"{m['prompt_id']}_experiment.py",
            f"{m['prompt_id']}_metrics.json",
        )
        assert (
            m["prompt_context"].startswith(m["prompt_context"].split(" by applying")[0])
            and "by applying the following optimizations: " in m["prompt_context"]
        )
        assert (out / m["path_to_reference_baseline"]).exists()
        assert m["bar"] == {"kind": "fewer_steps", "margin_db": 1.0}  # what the evaluator judges the task by
        code = (out / m["path_to_gt_code"]).read_text()
        assert f"NUM_INFERENCE_STEPS = {m['steps']}" in code
    speedup_tasks = [m for m in manifest if m["category"] == "speedup"]
    assert any("achieve a 2x speedup" in m["prompt_context"] for m in speedup_tasks)
    mapping = json.loads((out / "file_id_mapping.json").read_text())
    assert mapping == {m["original_filename"]: int(m["prompt_id"]) for m in manifest}

    # a new sweep adds a task: earlier ids stay, the new ones go above the highest
    write_sweep(tmp_path / "b", [row(scheduler="unipc", accel="tome", speedup=1.9, clip_loss=0.0)])
    third = _postprocess(
        ["sweep_dir=[a,b]", "include_random=true", "budgets=[0.02,0.05]", *GRID, "out_dir=first", "verify=false"],
        tmp_path,
    )
    assert third.returncode == 0, third.stderr[-3000:]
    grown = json.loads((out / "file_id_mapping.json").read_text())
    assert {k: grown[k] for k in mapping} == mapping
    assert min(v for k, v in grown.items() if k not in mapping) == max(mapping.values()) + 1


def test_console_counts_are_singular_for_one():
    from accel_bench.postprocess.__main__ import counted

    assert [counted(n, "entry", "entries") for n in (0, 1, 2)] == ["0 entries", "1 entry", "2 entries"]


def test_postprocess_bad_input_is_one_line_exit_2(tmp_path):
    result = _postprocess([], tmp_path)  # the one setting without a default, not given
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: sweep_dir='???' is not allowed: a sweep folder, or a list of distinct ones, e.g. [a,b] (it has no default)"
    ]
    result = _postprocess(["sweep_dir=nowhere"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: sweep_dir='nowhere' is not allowed: a sweep folder written by run.py -m (with a summary.csv)"
    ]
    written = row()
    write_sweep(tmp_path / "a", [written])
    result = _postprocess(["sweep_dir=a", "templates.speedup='achieve {speed}x'"], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: templates.speedup=")
    result = _postprocess(["sweep_dir=a", "fewer_steps_margin_db=-2"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: fewer_steps_margin_db=-2.0 is not allowed: null (the fidelity floor alone) or a margin in dB in [0, 30)"
    ]
    result = _postprocess(["sweep_dir=a", "budget_metric=psnr_db"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: budget_metric='psnr_db' is not allowed: clip | ssim | lpips"
    ]
    result = _postprocess(["sweep_dir=a", "budget_metric=lpips", "budgets=[0.1,2]"], tmp_path)
    assert result.returncode == 2 and "budgets on LPIPS in [0, 1)" in result.stderr
    result = _postprocess(["sweep_dir=a", "top_k=3"], tmp_path)  # no such setting: Hydra alone would exit 1
    assert result.returncode == 2 and result.stderr.startswith("error: top_k=3 is not allowed: no such setting;")
    result = _postprocess(["sweep_dir=a", "+top_k=3"], tmp_path)  # added by Hydra, read by nothing
    assert result.returncode == 2 and result.stderr.startswith("error: top_k=3 is not allowed: no such setting;")
    result = _postprocess(["sweep_dir=a", "grid.schedulers=[ddim,euler]"], tmp_path)  # no row names it: all missing
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: grid.schedulers=['ddim', 'euler'] is not allowed: a non-empty list of ddim | dpmsolver | unipc"
    ]
    (tmp_path / "a_file").write_text("")
    result = _postprocess(["sweep_dir=a", "out_dir=a_file"], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: out_dir='a_file' is not allowed: a folder")
    result = _postprocess(["sweep_dir=a", "budgets=0.02,0.05"], tmp_path)  # Hydra: a sweep, refused in six lines
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: budgets='0.02,0.05' is not allowed: one value (a list is written [a,b])"
    ]
    result = _postprocess(["sweep_dir=a", "budgets=[]"], tmp_path)  # nothing could be selected
    assert result.returncode == 2 and result.stderr.startswith("error: budgets=[] is not allowed: budgets on CLIP loss")
    for sweeps in ("[]", "[a,./a]"):  # nothing to read; one sweep's rows twice
        result = _postprocess([f"sweep_dir={sweeps}"], tmp_path)
        assert result.returncode == 2 and result.stderr.startswith("error: sweep_dir=[")
        assert "a list of distinct ones" in result.stderr
    mine = tmp_path / "mine" / "models"  # someone's folder: post-process would replace its models/
    mine.mkdir(parents=True)
    (mine / "weights.bin").write_text("kept")
    result = _postprocess(["sweep_dir=a", "out_dir=mine"], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: out_dir='mine' is not allowed: a new or empty")
    assert [p.name for p in (tmp_path / "mine").rglob("*")] == ["models", "weights.bin"]
    result = _postprocess(["sweep_dir=a", "budgets=[0.02,abc]"], tmp_path)  # a typed list's element
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: budgets=[0.02, 'abc'] is not allowed: a list of numbers"
    ]
    summary = tmp_path / "a" / "summary.csv"
    summary.write_text(summary.read_text().replace(",ok,", ",done,", 1))  # a summary edited by hand
    result = _postprocess(["sweep_dir=a"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: sweep_dir='a' is not allowed: a sweep whose summary reads back: "
        f"{Path('a') / 'summary.csv'} line 2 (run_id {written.run_id!r}): status='done' is not one of ('ok', 'failed', 'invalid')"
    ]
    assert not (tmp_path / "dataset").exists()  # nothing written


def test_budgets_bound_the_metric_they_name(tmp_path):
    """budget_metric=lpips selects under LPIPS; a row that did not measure it is left out, and says so."""
    from accel_bench.postprocess.select import left_out

    rows = [
        row(speedup=3.0, clip_loss=0.001, lpips=0.2),
        row(accel="tome", speedup=2.0, clip_loss=0.03, lpips=0.05),
        row(accel="tgate", speedup=2.5, clip_loss=0.0),  # measured without LPIPS (metrics=[clip,...])
    ]
    folder = write_sweep(tmp_path / "sweep", rows)
    by_clip, _ = read_summaries([folder])
    assert [(e.accel, e.budget_metric, e.loss) for e in select(by_clip, [0.01], True)] == [("deepcache", "clip", 0.001)]
    by_lpips, statuses = read_summaries([folder], "lpips")
    (entry,) = select(by_lpips, [0.1], True, "lpips")
    assert (entry.accel, entry.loss, entry.clip_loss, entry.budget_metric) == ("tome", 0.05, 0.03, "lpips")
    reasons = left_out(by_lpips, include_random=True, include_disturbed=False)
    assert [m.accel for m in reasons["the budget metric not measured (not in the sweep's metrics list)"]] == ["tgate"]
    (gap,) = gaps([("tiny", "ddim", 25)], [0.01], by_lpips, statuses, [], True, "LPIPS")
    assert gap.reason == "no accelerated row within the budget (lowest LPIPS among faster rows: 0.0500)"
    unmeasured, statuses = read_summaries([write_sweep(tmp_path / "old", [rows[2]])], "lpips")
    (gap,) = gaps([("tiny", "ddim", 25)], [0.1], unmeasured, statuses, [], True, "LPIPS")
    assert gap.reason.startswith("LPIPS not measured by the accelerated rows")


def test_candidates_exclude_controls_and_slowdowns(tmp_path):
    measured, _ = measured_of(tmp_path, [row(accel="none", speedup=1.2), row(speedup=0.95), row(speedup=1.05)])
    assert [m.speedup for m in candidates(measured, include_random=True)] == [1.05]


# a tiny DeepCache row that one CPU pass measures clearly faster than its baseline: two full steps of six, about
# 2.3x on 2 cores (interval 3 of 4 steps, about 1.7x, has measured 0.83x in one pass there)
CLEARLY_FASTER = ["steps=6", "accel.cache_interval=5"]


def test_quality_stage_gives_fid_and_resumes_from_its_image_cache(tmp_path):
    """confirm=true with quality_prompts: each entry's FID against its baseline (and a reference folder)
    over many prompts, its images cached; a stage cut short regenerates only what is missing."""
    from PIL import Image

    sweep = tmp_path / "sweep"
    ran = run_cli(
        [
            *FAST,
            "accel=deepcache",
            *CLEARLY_FASTER,
            f"summary_path={sweep / 'summary.csv'}",
            f"hydra.run.dir={sweep / '0'}",
        ],
        tmp_path,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    (tmp_path / "captions.txt").write_text(
        "\n".join(f"a photo of a {thing}" for thing in "cat dog car tree boat house".split())
    )
    reference = tmp_path / "coco"
    reference.mkdir()
    for index in range(3):
        Image.fromarray(np.random.default_rng(index).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
            reference / f"{index}.jpg"
        )
    args = [
        f"sweep_dir={sweep}",
        "budgets=[0.5]",
        "include_random=true",
        "include_disturbed=true",  # the stage under test, not the host's load, decides what this test sees
        "verify=false",
        "confirm=true",
        "confirm_repeats=1",
        "quality_prompts=captions.txt",
        "quality_num_prompts=5",
        "quality_batch_size=2",
        f"fid_reference_dir={reference}",
        "grid.pipelines=[tiny]",
        "grid.schedulers=[ddim]",
        "grid.steps=[6]",
    ]
    first = _postprocess(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "quality: tiny ddim 6 steps, budget 0.5, deepcache: FID" in first.stdout and "and LPIPS" in first.stdout
    (entry,) = json.loads((tmp_path / "dataset" / "search_params.json").read_text())["entries"]
    assert entry["fid_images"] == 5 and entry["fid_weights"] == "inception-v3/torchvision/random"
    assert entry["fid"] > 0 and entry["fid_reference"] > 0 and entry["base_fid_reference"] > 0
    assert 0 < entry["quality_lpips"] < 1
    base, accel = sorted((tmp_path / "dataset" / "quality").iterdir(), key=lambda f: not f.name.startswith("baseline-"))
    assert base.name.startswith("baseline-") and accel.name.startswith(entry["run_id"] + "-")
    assert len(list(base.glob("*.png"))) == 5
    images = sorted(accel.glob("*.png"))
    assert [p.name for p in images] == [f"{i:05d}.png" for i in range(5)]
    stamps = {p.name: p.stat().st_mtime_ns for p in images}
    images[3].unlink()  # cut short: the batch of images 2 and 3 is made again, nothing else
    again = _postprocess(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    (redone,) = json.loads((tmp_path / "dataset" / "search_params.json").read_text())["entries"]
    assert redone["fid"] == entry["fid"]  # the same seeds gave the same images
    changed = sorted(p.name for p in accel.glob("*.png") if p.stat().st_mtime_ns != stamps.get(p.name))
    assert changed == ["00002.png", "00003.png"]


@pytest.mark.parametrize(
    "args, key",
    [
        (["quality_prompts=captions.txt"], "quality_prompts"),  # FID runs in the confirmation stage
        (["confirm=true", "quality_prompts=nowhere.txt"], "quality_prompts"),
        (["confirm=true", "quality_prompts=captions.txt", "quality_num_prompts=50"], "quality_prompts"),
        (["confirm=true", "quality_prompts=captions.txt", "fid_reference_dir=nowhere"], "fid_reference_dir"),
        (["fid_weights=imagenet"], "fid_weights"),
        (["quality_num_prompts=10"], "quality_num_prompts"),
    ],
)
def test_quality_stage_bad_input_is_one_line_exit_2(tmp_path, args, key):
    write_sweep(tmp_path / "a", [row()])
    (tmp_path / "captions.txt").write_text("a cat\na dog\n")
    result = _postprocess(["sweep_dir=a", *args], tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {key}=")
    assert not (tmp_path / "dataset").exists()


def _gt_record(reasons, status="ok", **fields):
    """The evaluator's record of a ground truth on the tiny pipeline, judged with ``reasons``."""
    from accel_bench.evaluate.file_record import FileRecord, Watched

    return FileRecord(
        path="gt.py",
        min_psnr_db=25.0,
        target_speedup=1.5,
        quality_budget=fields.pop("quality_budget", None),
        budget_metric=fields.pop("budget_metric", None),
        warmup_batches=1,
        batch_time_s=None,
        round_trip_s=None,
        peak_rss_gb=0.0,
        watched=Watched("cpu", 0, 0, 0, 0, 0, [], 0.0, None),
        status=status,
        reasons=reasons,
        **fields,
    )


def _gt_task(prompt_id, gt="a", **fields):
    """A manifest task on the tiny pipeline whose ground truth is ``gt_code/<gt>.py``."""
    from accel_bench.evaluate.manifest import ManifestTask

    values = dict(
        prompt_id=prompt_id,
        task_key=f"task{gt}",
        difficulty="medium",
        pipeline="tiny",
        steps=6,
        resolution=64,
        batch_size=2,
        target_speedup=1.5,
        quality_budget=0.05,
        path_to_gt_code=f"gt_code/{gt}.py",
        path_to_reference_baseline="gt_code/baselines/base.py",
        path_to_gen_code_baseline=f"{prompt_id}_baseline.py",
        path_to_gen_code=f"{prompt_id}_experiment.py",
        path_to_metrics=f"{prompt_id}_metrics.json",
        accel="deepcache",
    )
    return ManifestTask(**{**values, **fields})


def test_tasks_whose_ground_truth_fails_its_bar_are_dropped_with_the_reason(tmp_path):
    from accel_bench.evaluate.bar import Bar
    from accel_bench.postprocess import ground_truth

    def record(status, reasons, error=None, doubt=False):
        bar = None if doubt is False else Bar("fewer_steps", 25.0, doubt=doubt)
        return _gt_record(reasons, status, error=error, bar=bar)

    records = {
        "10": record("ok", []),
        "11": record("ok", ["too_slow"], "speedup 1.40x below the target 1.5x"),  # the machine's noise: kept
        "12": record("ok", ["no_better_than_fewer_steps"], "34.0 dB pooled, the 5-step cut 35.5 dB + 1 dB"),
        "9": record("failed", ["crashed"], "ImportError: tgate"),
        "13": record("ok", ["unfaithful", "too_slow"], "2 of 4 images below 25 dB"),
    }
    dropped = ground_truth.why_dropped(records)
    assert list(dropped) == ["9", "12", "13"]  # in prompt-id order
    assert ground_truth.in_doubt(records) == []  # no bar measured in doubt: each drop stands
    doubted = "fewer steps 5 measured slower than the baseline's 6 steps (0.99x): noise"
    records.update(
        {
            "14": record("ok", ["no_better_than_fewer_steps", "disturbed"], "37.4 dB ...", doubted),
            "15": record("ok", ["unfaithful", "no_better_than_fewer_steps"], "1 of 4 images", doubted),
            "8": record("ok", ["no_better_than_fewer_steps"], "34.0 dB ...", None),
        }
    )
    assert ground_truth.in_doubt(records) == ["14"]  # an unfaithful one goes whatever its speed
    assert dropped["12"].startswith("no_better_than_fewer_steps: 34.0 dB") and dropped["9"].startswith("failed: ")
    assert dropped["13"].startswith("unfaithful: ")

    out = tmp_path / "dataset"
    (out / "gt_code" / "baselines").mkdir(parents=True)
    manifest = [_gt_task(prompt_id, gt) for prompt_id, gt in (("9", "a"), ("10", "a"), ("12", "b"), ("13", "c"))]
    for name in ("a", "b", "c", "baselines/base"):
        (out / "gt_code" / f"{name}.py").write_text("")
    kept = ground_truth.drop(out, manifest, dropped)
    assert [t.prompt_id for t in kept] == ["10"]
    # a file another kept task still uses stays; the others go
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.py")) == ["gt_code/a.py", "gt_code/baselines/base.py"]
    assert [(d["prompt_id"], d["reason"].split(":")[0]) for d in json.loads((out / "dropped.json").read_text())] == [
        ("9", "failed"),
        ("12", "no_better_than_fewer_steps"),
        ("13", "unfaithful"),
    ]


def test_a_kept_task_whose_ground_truth_misses_its_budget_is_named_with_both_values():
    from accel_bench.postprocess import ground_truth

    def record(reasons, **metrics):
        found = _gt_record(reasons, quality_budget=0.02, budget_metric="clip")
        found.metrics.update(metrics)
        return found

    def task(prompt_id, metric="clip", measured=0.0185):
        return _gt_task(prompt_id, quality_budget=0.02, budget_metric=metric, measured_loss=measured)

    records = {
        "10": record(["over_budget"], clip_loss=0.0227),
        "9": record([], clip_loss=0.0151),  # within: not named
        "11": record(["too_slow", "over_budget"], ssim_loss=0.031),
        "12": record(["over_budget"]),  # the metric not scored
        "13": record(["unfaithful", "over_budget"], clip_loss=0.5),  # dropped: not among the kept
    }
    kept = [task("11", "ssim", None), task("9"), task("10"), task("12")]
    assert ground_truth.over_budget(records, kept) == {
        "10": "CLIP loss 0.0227 on fresh inputs, over 0.02 (its sweep row: 0.0185)",
        "11": "1 - SSIM 0.0310 on fresh inputs, over 0.02",
        "12": "CLIP loss not measured on fresh inputs, over 0.02 (its sweep row: 0.0185)",
    }
    assert list(ground_truth.over_budget(records, kept)) == ["10", "11", "12"]  # in prompt-id order
    assert ground_truth.over_budget(records, []) == {}


def test_verify_judges_each_ground_truth_against_its_bar(tmp_path):
    """Every task's ground truth is judged as a candidate would be; exactly the tasks whose ground truth
    fails a fidelity rule are dropped, each with its reason. (Whether DeepCache on the tiny pipeline
    clears its cut by the margin depends on how still a 2-core machine holds its speed: on a quiet one
    interval 3, branch 1 at 10 steps cleared its 7-step cut by 0.98 dB against a 1 dB margin.)"""
    from accel_bench.postprocess import ground_truth

    write_sweep(tmp_path / "a", [row(speedup=1.6, clip_loss=0.0, steps=10)])
    args = ["sweep_dir=a", "include_random=true", "budgets=[0.05]", "grid.pipelines=[tiny]", "grid.schedulers=[ddim]"]
    unjudged = _postprocess([*args, "grid.steps=[10]", "verify=false", "out_dir=all"], tmp_path)
    assert unjudged.returncode == 0, unjudged.stderr[-3000:]
    every = json.loads((tmp_path / "all" / "manifest.json").read_text())
    result = _postprocess([*args, "grid.steps=[10]", "bar_num_prompts=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "dataset"
    kept = json.loads((out / "manifest.json").read_text())
    dropped = {d["prompt_id"]: d for d in json.loads((out / "dropped.json").read_text())}
    checks = json.loads((out / "ground_truth_checks.json").read_text())
    assert sorted(checks) == sorted(m["prompt_id"] for m in every)  # every task judged
    assert sorted([m["prompt_id"] for m in kept] + list(dropped)) == sorted(checks)
    for prompt_id, check in checks.items():  # judged as a candidate is: its speed, and the bar of its target
        bar = check["bar"]
        firm = {"failed", "wrong_images", "unfaithful"}
        if bar["doubt"] and "no_better_than_fewer_steps" in check["reasons"] and not firm & set(check["reasons"]):
            # still in doubt (ground_truth.in_doubt): the first judgement was too
            assert check["judgements"] == 2 and "in doubt" in dropped[prompt_id]["reason"]
        assert check["status"] == "ok" and check["speedup"] > 0 and bar["kind"] in ("fewer_steps", "floor")
        failed = bar["kind"] == "fewer_steps" and bar["psnr_db"] < bar["required_psnr_db"]
        assert failed == ("no_better_than_fewer_steps" in check["reasons"])
        assert (prompt_id in dropped) == bool(set(check["reasons"]) & {"no_better_than_fewer_steps", "unfaithful"})
        if prompt_id in dropped:
            assert dropped[prompt_id]["reason"] == f"{check['reasons'][0]}: {check['error']}"
            assert f"dropped task {prompt_id}: its ground truth fails it" in result.stdout
    assert f"1 entry, {len(kept)} task" in result.stdout
    for m in kept:  # a kept task whose ground truth missed its budget on fresh inputs is named, the others not
        named = f"task {m['prompt_id']} kept though its ground truth missed its budget" in result.stdout
        assert named == ("over_budget" in checks[m["prompt_id"]]["reasons"]), (checks[m["prompt_id"]], result.stdout)
    for m in kept:  # a kept task's files are all there
        assert (out / m["path_to_gt_code"]).is_file() and (out / m["path_to_reference_baseline"]).is_file()
    # a judgement again covers the tasks asked for, alone
    again = ground_truth.judge(
        tmp_path / "all" / "manifest.json", os.environ["ACCEL_BENCH_CACHE"], 2, [every[-1]["prompt_id"]]
    )
    assert list(again) == [every[-1]["prompt_id"]] and again[every[-1]["prompt_id"]].status == "ok"


LIGHT_STEPPED = """
import time
import zlib
import numpy as np

NUM_INFERENCE_STEPS = 6

def load_pipeline(model_id):
    return "light"

def inference(pipe, prompts, generator):
    steps = NUM_INFERENCE_STEPS
    time.sleep({seconds})  # a batch's latency, as a function of the step count: asleep, no CPU load shifts it
    drawn = [np.random.default_rng([zlib.crc32(p.encode()), g.initial_seed()]) for p, g in zip(prompts, generator)]
    return np.stack([np.clip(d.integers(8, 240, (64, 64, 3)) + {shift}, 0, 255).astype(np.uint8) for d in drawn])
"""


def test_a_ground_truth_failing_its_bar_in_doubt_is_judged_again_then_dropped_saying_so(tmp_path):
    """A light stand-in whose cuts run slower than its full count (as only noise makes a real pipeline's
    do): every reference is in doubt, so the ground truth failing it is judged again, on fresh inputs,
    before its task goes with the doubt in its reason. A ground truth clearing the bar is judged once."""
    from accel_bench.postprocess import ground_truth

    dataset = tmp_path / "dataset"
    (dataset / "gt_code" / "baselines").mkdir(parents=True)
    # the baseline: fewer steps cost more; its images move 1 level a step away from 6
    baseline = LIGHT_STEPPED.format(seconds="0.02 * (12 - steps)", shift="(6 - steps)")
    (dataset / "gt_code" / "baselines" / "base.py").write_text(baseline)
    (dataset / "gt_code" / "far.py").write_text(LIGHT_STEPPED.format(seconds="0.03", shift="8"))  # 4x, 30 dB
    (dataset / "gt_code" / "near.py").write_text(LIGHT_STEPPED.format(seconds="0.03", shift="0"))  # 4x, identical
    entries = [
        {
            "prompt_id": prompt_id,
            "task_key": f"tiny_DDIM_6_{gt}",
            "difficulty": "medium",
            "pipeline": "tiny",
            "steps": 6,
            "resolution": 64,
            "batch_size": 2,
            "path_to_gt_code": f"gt_code/{gt}.py",
            "path_to_reference_baseline": "gt_code/baselines/base.py",
            "path_to_gen_code_baseline": "0_baseline.py",
            "path_to_gen_code": f"{prompt_id}_experiment.py",
            "path_to_metrics": f"{prompt_id}_metrics.json",
            "target_speedup": 1.5,
            "quality_budget": 0.5,
            "bar": {"kind": "fewer_steps", "margin_db": 1.0},
        }
        for prompt_id, gt in (("1", "far"), ("2", "near"))
    ]
    (dataset / "manifest.json").write_text(json.dumps(entries))
    records, again = ground_truth.check(dataset / "manifest.json", os.environ["ACCEL_BENCH_CACHE"], 2)
    assert again == ["1"], {k: (r.speedup, r.reasons, r.error) for k, r in records.items()}
    far, near = records["1"], records["2"]
    assert far.reasons[:1] == ["no_better_than_fewer_steps"] and "disturbed" in far.reasons
    assert "measured slower than the baseline's 6 steps" in far.bar.doubt and "(in doubt: " in far.error
    assert near.reasons == [] and near.bar.kind == "fewer_steps" and near.bar.doubt, near
    dropped = ground_truth.why_dropped(records)
    assert list(dropped) == ["1"] and "in doubt" in dropped["1"]
    ground_truth.write_checks(dataset, records, again)
    checks = json.loads((dataset / "ground_truth_checks.json").read_text())
    assert {k: c["judgements"] for k, c in checks.items()} == {"1": 2, "2": 1}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium; CI installs it)")
def test_report_renders_its_plots_and_image_grids_in_a_browser(tmp_path):
    """report.html, opened offline in headless Chromium: every plot and grid image decodes. One
    combination's grid comes from the sweep's saved images, the other's is regenerated. Each row must
    measure faster than its baseline in one CPU pass to make an entry (``CLEARLY_FASTER``; two full steps
    of five, interval 4, about 1.9x)."""
    for name, extra in (("a", ["save_images=true", *CLEARLY_FASTER]), ("b", ["steps=5", "accel.cache_interval=4"])):
        sweep = tmp_path / name
        ran = run_cli(
            [*FAST, "accel=deepcache", *extra, f"summary_path={sweep / 'summary.csv'}", f"hydra.run.dir={sweep / '0'}"],
            tmp_path,
        )
        assert ran.returncode == 0, ran.stderr[-2000:]
    args = ["sweep_dir=[a,b]", "include_random=true", "include_disturbed=true", "budgets=[0.5]", "verify=false"]
    grid = ["grid.pipelines=[tiny]", "grid.schedulers=[ddim]", "grid.steps=[5,6]"]
    result = _postprocess([*args, *grid, "report_num_prompts=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = tmp_path / "dataset" / "report.html"
    page = report.read_text()
    assert (
        page.count('class="plot"') == 2 and "the sweep's saved images" in page and "regenerated for this report" in page
    )
    images = page.count("<img ")
    assert images == 2 + 2 * 2 * 2  # two plots; per combination a grid of 2 prompts x (baseline, selected)
    assert 'src="http' not in page and 'src="file' not in page  # self-contained
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f'data-rendered="{images}/{images}"' in dom.stdout, dom.stdout[:500] + dom.stderr[-2000:]
