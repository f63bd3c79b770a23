"""End to end: run.py writes one complete row, result.json and images; the same config gives the
same images and the same files, timings aside; a failure is a row, not a lost run."""

from __future__ import annotations

import csv
import json
import os

import pandas as pd
import pytest

from accel_bench import baselines, experiment
from accel_bench.config import check, compose_run_config
from accel_bench.console import format_summary
from accel_bench.record import (
    COLUMNS,
    Row,
    Side,
    append_summary,
    read_frame,
    read_result,
    read_rows,
    upsert_summary,
    write_result,
)

from .conftest import FAST, run_cli

CONTRACT = (
    "run_id timestamp status error pipeline weights scheduler steps batch_size num_images resolution accel "
    "accel_params seed device dtype latency_s base_latency_s speedup batch_time_median_s base_batch_time_median_s "
    "images_per_s flops_per_image base_flops_per_image flops_ratio peak_mem_gb clip_score base_clip_score clip_loss "
    "clip_model clip_weights psnr_db ssim versions"
).split()
TIMING = {
    "timestamp",
    "latency_s",
    "base_latency_s",
    "speedup",
    "batch_time_median_s",
    "base_batch_time_median_s",
    "images_per_s",
    "base_images_per_s",
    "batch_time_min_s",
    "batch_time_max_s",
    "base_batch_time_min_s",
    "base_batch_time_max_s",
    "pipeline_load_s",
    "run_dir",
    "warmup_s",
    "base_warmup_s",
    "measured_s",
    "base_measured_s",
    "job_s",
    "speedup_min",
    "speedup_max",
    "latency_min_s",
    "latency_max_s",
    "latency_spread",
    "base_latency_min_s",
    "base_latency_max_s",
    "base_latency_spread",
    "flops_s",
    "base_flops_s",
    "scoring_s",
    "tflops",  # FLOPs over the latency
    "base_tflops",
    "peak_share",
    "base_peak_share",
    # what the watches saw, and so which passes the figures use: timings too
    "repeats",
    "disturbed",
    *(
        prefix + name
        for prefix in ("", "base_")
        for name in (
            "pass_latencies_s",
            "dropped_passes",
            "outlier_batches",
            "contended_batches",
            "disturbed_passes",
            "compiled_passes",
            "compilations",
            "other_gpu_work",
            "host_wait_max",
        )
    ),
}


def test_cli_run_writes_row_result_and_images(tmp_path):
    summary = tmp_path / "out" / "summary.csv"
    args = [
        *FAST,
        "accel=deepcache",
        "accel.cache_interval=2",
        "scheduler=unipc",
        "save_images=true",
        f"summary_path={summary}",
    ]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "speedup" in result.stdout and "random weights" in result.stdout

    with summary.open() as f:
        header = next(csv.reader(f))
    assert header[: len(CONTRACT)] == CONTRACT
    frame = read_frame(summary)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row.status, row.pipeline, row.scheduler, row.accel, row.weights) == (
        "ok",
        "tiny",
        "unipc",
        "deepcache",
        "random",
    )
    assert (row.steps, row.batch_size, row.num_images, row.resolution) == (4, 2, 3, 64)
    assert json.loads(row.accel_params) == {"cache_branch_id": 0, "cache_interval": 2}
    assert {"torch", "diffusers", "DeepCache", "tomesd", "tgate"} <= set(json.loads(row.versions))
    assert row.speedup == pytest.approx(row.base_latency_s / row.latency_s)
    assert row.flops_ratio == pytest.approx(row.base_flops_per_image / row.flops_per_image)
    assert row.flops_per_image < row.base_flops_per_image  # DeepCache skips work
    assert row.clip_loss == pytest.approx((row.base_clip_score - row.clip_score) / row.base_clip_score)
    assert (row.clip_model, row.clip_weights) == ("accel-bench-tiny-clip", "random")
    assert 0 < row.ssim <= 1 and row.psnr_db > 0 and row.ssim_loss == pytest.approx(1 - row.ssim)
    assert 0 < row.lpips < 1  # DeepCache's images differ from the baseline's, a little
    assert json.loads(row.metric_weights) == {
        "clip": "accel-bench-tiny-clip/random",
        "lpips": "lpips-v0.1/alex/random",
        "psnr": "none",
        "ssim": "none",
    }
    assert (row["device"], row["dtype"]) == ("cpu", "fp32") and pd.isna(row["peak_mem_gb"])
    assert row.host_cpu == row.device_name  # on a CPU run the device is the host
    assert row.measured_s == pytest.approx(row.latency_s * row.num_images)  # one repeat on the CPU
    assert row.repeats == row.repeats_asked == 1 and pd.isna(row.disturbed)
    in_pipeline = row.measured_s + row.warmup_s + row.base_measured_s + row.base_warmup_s + row.pipeline_load_s
    assert in_pipeline < row.job_s

    run_dir = tmp_path / row.run_dir
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["row"]["run_id"] == row.run_id and saved["config"]["accel"]["cache_interval"] == 2
    for side in ("baseline", "accel"):
        assert sorted(p.name for p in (run_dir / "images" / side).iterdir()) == ["0000.png", "0001.png", "0002.png"]


def test_the_metrics_list_decides_what_is_scored(tmp_path):
    """A metric left out of ``metrics`` leaves its columns empty (not zero): nothing claims a score not taken."""
    summary = tmp_path / "summary.csv"
    result = run_cli([*FAST, "metrics=[psnr,lpips]", f"summary_path={summary}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(summary)
    assert row.clip_loss is None and row.accelerated.clip_score is None and row.ssim is None
    assert row.psnr_db > 0 and row.lpips > 0
    assert row.metric_weights == {"lpips": "lpips-v0.1/alex/random", "psnr": "none"}
    assert "CLIP score" in result.stdout and "LPIPS" in result.stdout


def test_same_config_same_images_and_files(tmp_path, monkeypatch):
    rows = []
    for attempt in ("a", "b"):
        monkeypatch.setattr(baselines, "_IN_PROCESS", {})  # two independent runs: no baseline reuse
        monkeypatch.setattr(experiment, "_memory", experiment.ProcessMemory())  # nor FLOPs or warmth
        cfg = compose_run_config(
            [
                *FAST,
                "accel=tgate_tome",
                "accel.gate_step=2",
                "save_images=true",
                f"summary_path={tmp_path / 'summary.csv'}",
            ]
        )
        rows.append(experiment.run(cfg, tmp_path / attempt))
    first, second = (row.to_csv() for row in rows)
    assert (
        first["status"] == "ok" and rows[0].to_json()["base"]["latency_s"] == rows[0].base.latency_s
    )  # nested in JSON
    assert {k: v for k, v in first.items() if k not in TIMING} == {k: v for k, v in second.items() if k not in TIMING}
    for side in ("baseline", "accel"):
        for image in sorted((tmp_path / "a" / "images" / side).iterdir()):
            assert image.read_bytes() == (tmp_path / "b" / "images" / side / image.name).read_bytes()
    assert len(read_frame(tmp_path / "summary.csv")) == 2


def test_a_process_counts_a_settings_flops_once_and_rows_say_which_they_inherited(tmp_path, monkeypatch):
    """FLOPs per image depend on the setting, not on the seed or the batch: the second job of a
    process with the same setting takes them from the first, and says so; a new setting is counted."""
    monkeypatch.setattr(experiment, "_memory", experiment.ProcessMemory())
    common = [*FAST, "accel=deepcache", "accel.cache_interval=2", f"summary_path={tmp_path / 's.csv'}"]
    first = experiment.run(compose_run_config(common), tmp_path / "a")
    again = experiment.run(compose_run_config([*common, "seed=1", "batch_size=1"]), tmp_path / "b")
    other = experiment.run(compose_run_config([*common, "accel.cache_interval=4"]), tmp_path / "c")
    assert first.accelerated.flops_s and not first.accelerated.flops_inherited
    assert again.accelerated.flops_inherited and again.accelerated.flops_s is None
    assert again.accelerated.flops_per_image == first.accelerated.flops_per_image
    assert (
        not other.accelerated.flops_inherited and other.accelerated.flops_per_image < first.accelerated.flops_per_image
    )
    assert read_rows(tmp_path / "s.csv")[1].accelerated.flops_inherited  # through the summary too


def test_only_a_gpu_auto_warm_up_is_inherited():
    from accel_bench.config import warmup_policy

    cfg = compose_run_config()
    assert warmup_policy(cfg, "cuda", warm=True).inherited
    assert not warmup_policy(cfg, "cuda", warm=False).inherited
    assert not warmup_policy(cfg, "cpu", warm=True).inherited  # one batch on a CPU either way
    assert not warmup_policy(compose_run_config(["warmup_batches=3"]), "cuda", warm=True).inherited  # asked for 3
    assert not warmup_policy(compose_run_config(["warmup_inherit=false"]), "cuda", warm=True).inherited


def test_a_failing_run_is_recorded_not_lost(tmp_path, monkeypatch):
    def broken_load(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)\nsecond line")

    monkeypatch.setattr(experiment, "cached_pipeline", broken_load)
    cfg = compose_run_config([*FAST, f"summary_path={tmp_path / 'summary.csv'}"])
    row = experiment.run(cfg, tmp_path / "job")
    assert row.status == "failed"
    assert row.error == "RuntimeError: CUDA out of memory (simulated) second line"
    recorded = read_frame(tmp_path / "summary.csv").iloc[0]
    assert (recorded.status, recorded.run_id) == ("failed", row.run_id)
    assert json.loads((tmp_path / "job" / "result.json").read_text())["row"]["status"] == "failed"


@pytest.mark.parametrize("stop", [SystemExit(-1), KeyboardInterrupt()])
def test_a_run_told_to_stop_records_nothing_whatever_its_cleanup_raises(tmp_path, monkeypatch, stop):
    """submitit's SystemExit on preemption lands wherever the run was, and a cleanup there can raise
    another error in its place: the run stops without a failed row (its requeued task records it)."""

    def preempted_load(*args, **kwargs):
        try:
            raise stop
        finally:
            raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")

    monkeypatch.setattr(experiment, "cached_pipeline", preempted_load)
    summary = tmp_path / "summary.csv"
    cfg = compose_run_config([*FAST, f"summary_path={summary}"])
    with pytest.raises(AttributeError) as raised:
        experiment.run(cfg, tmp_path / "job")
    assert raised.value.__context__ is stop
    assert not summary.exists() and not (tmp_path / "job" / "result.json").exists()


def test_summary_appends_under_one_header_and_refuses_foreign_files(tmp_path):
    path = tmp_path / "summary.csv"
    for status in ("ok", "failed"):
        append_summary(path, Row(run_id="x", timestamp="t", status=status))
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(COLUMNS) and len(lines) == 3
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an accel_bench summary"):
        append_summary(foreign, Row(run_id="x", timestamp="t", status="ok"))
    assert foreign.read_text() == "a,b\n1,2\n"


def test_summary_of_an_older_version_is_upgraded_without_losing_values(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_text("run_id,status,retired_column\nold1,ok,kept\n")
    append_summary(path, Row(run_id="new", timestamp="t", status="ok", speedup=2.5))
    frame = read_frame(path)
    assert list(frame.run_id) == ["old1", "new"]
    assert frame.retired_column[0] == "kept" and frame.speedup[1] == 2.5
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)


def test_upsert_keeps_one_row_per_job(tmp_path):
    path = tmp_path / "summary.csv"
    upsert_summary(path, Row(run_id="a", timestamp="t", status="failed", run_dir="sweep/0"))
    upsert_summary(path, Row(run_id="b", timestamp="t", status="ok", run_dir="sweep/1"))
    assert upsert_summary(path, Row(run_id="a", timestamp="t2", status="ok", run_dir="sweep/0")) == 2
    frame = read_frame(path)
    assert sorted(zip(frame.run_dir, frame.status)) == [("sweep/0", "ok"), ("sweep/1", "ok")]


def test_run_id_identifies_the_measured_configuration():
    base = experiment.run_id(compose_run_config())
    assert experiment.run_id(compose_run_config(["summary_path=elsewhere.csv", "save_images=true"])) == base
    assert experiment.run_id(compose_run_config(["accel.cache_interval=4"])) != base


def test_a_row_on_a_compiled_baseline_names_it_and_keeps_its_own_baseline(tmp_path, traced_only, monkeypatch):
    """DeepCache on a compiled UNet against a compiled baseline (traced by dynamo, run as traced: see
    ``traced_only``); the eager baseline measured before is not reused for it."""
    monkeypatch.setattr(experiment, "_memory", experiment.ProcessMemory())  # FLOPs other tests counted
    common = [*FAST, "accel=deepcache_compile", f"summary_path={tmp_path / 'summary.csv'}"]
    eager = experiment.run(compose_run_config(common), tmp_path / "eager")
    strong = experiment.run(compose_run_config([*common, "baseline.compile=default"]), tmp_path / "strong")
    assert (eager.status, strong.status) == ("ok", "ok"), strong.error
    assert (eager.baseline, strong.baseline) == ("eager", "compile:default")
    assert (
        eager.base.compile_s is None and strong.base.compile_s is not None and strong.accelerated.compile_s is not None
    )
    assert strong.baseline_cached is False and eager.run_id != strong.run_id
    # a compiled side is not counted itself: it carries the FLOPs of its eager equivalent, counted once
    # per process (the eager DeepCache here, by the first run) and inherited after that
    assert eager.base.flops_per_image is not None and not eager.base.flops_eager
    assert eager.accelerated.flops_eager and not eager.accelerated.flops_inherited and eager.accelerated.flops_s > 0
    assert eager.accelerated.flops_per_image < eager.base.flops_per_image and eager.flops_ratio > 1
    # (the eager baseline may come from another test's cache, so the compiled one's count may be its own)
    assert strong.base.flops_eager and strong.base.flops_per_image == eager.base.flops_per_image
    assert (
        strong.accelerated.flops_inherited and strong.accelerated.flops_per_image == eager.accelerated.flops_per_image
    )
    side = eager.accelerated
    assert side.tflops == pytest.approx(side.flops_per_image / side.latency_s / 1e3) and side.peak_share is None  # CPU
    assert strong.psnr_db > 30  # DeepCache against the same baseline computation, compiled


def test_deepcache_on_the_fast_recipe_against_the_fast_baseline(tmp_path, traced_only, monkeypatch):
    """The production recipe as the baseline (``baseline.recipe=fast``, its compile mode set by
    ``baseline.compile`` on this CPU) and under DeepCache: both sides run fused QKV, channels_last and
    int8 quantization compiled, and count FLOPs without them; a row that compiles names the settings
    torch.compile took from the environment."""
    monkeypatch.setattr(experiment, "_memory", experiment.ProcessMemory())
    for key in [k for k in os.environ if k.startswith(("TORCHINDUCTOR_", "TORCHDYNAMO_", "TORCH_COMPILE_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE_CONV_BACKENDS", "ATEN")
    common = [*FAST, f"summary_path={tmp_path / 'summary.csv'}"]
    eager = experiment.run(compose_run_config([*common, "accel=deepcache"]), tmp_path / "eager")
    cfg = compose_run_config(
        [*common, "accel=deepcache_fast", "accel.mode=default", "baseline.recipe=fast", "baseline.compile=default"]
    )
    checked = check(cfg)
    assert [m.name for m in checked.base_methods] == ["channels_last", "fused_qkv", "quantize", "compile"]
    assert [m.name for m in checked.methods] == ["deepcache", "channels_last", "fused_qkv", "quantize", "compile"]
    assert checked.base_methods[-1].record() == {
        "compile_targets": ["unet", "vae_decoder"],
        "fullgraph": True,
        "mode": "default",
    }
    fast = experiment.run(cfg, tmp_path / "fast")
    assert (eager.status, fast.status) == ("ok", "ok"), fast.error
    assert fast.baseline == "fast:compile:default" and not fast.baseline_cached
    assert fast.base.compile_s is not None and fast.accelerated.compile_s is not None
    # the same multiply-adds as eager DeepCache and the eager baseline: counted without the recipe
    assert fast.base.flops_eager and fast.base.flops_per_image == eager.base.flops_per_image
    assert fast.accelerated.flops_eager and fast.accelerated.flops_per_image == eager.accelerated.flops_per_image
    assert fast.psnr_db > 30 and fast.speedup > 0
    assert eager.compile_settings == {}  # nothing compiled: nothing to name
    assert fast.compile_settings == {"TORCHINDUCTOR_MAX_AUTOTUNE_CONV_BACKENDS": "ATEN"}
    assert "compiled under TORCHINDUCTOR_MAX_AUTOTUNE_CONV_BACKENDS=ATEN" in format_summary(fast, "summary.csv")
    (written,) = [r for r in read_rows(tmp_path / "summary.csv") if r.run_id == fast.run_id]
    assert written.compile_settings == fast.compile_settings


def test_fewer_prompts_than_a_batch_run_one_smaller_batch_and_the_row_says_so(tmp_path):
    cfg = compose_run_config(["steps=2", "batch_size=4", "num_prompts=2", f"summary_path={tmp_path / 's.csv'}"])
    row = experiment.run(cfg, tmp_path / "run")
    assert row.status == "ok", row.error
    assert (row.batch_size, row.num_images) == (2, 2)


def test_a_row_reads_back_as_it_was_written(tmp_path):
    """The CSV (flat) and result.json (nested) are read back by the row's own code into the same record."""
    row = Row(
        run_id="r",
        timestamp="t",
        status="ok",
        steps=4,
        accel_params={"ratio": 0.5},
        accel_methods=["tome"],
        interleaved=True,
        baseline_cached=False,
        speedup=float("inf"),
        model_id=None,
        versions={"torch": "2"},
        accelerated=Side(latency_s=0.5, warmup_batches=2, flops_per_image=None),
        base=Side(latency_s=1.0, compile_s=3.0),
    )
    append_summary(tmp_path / "summary.csv", row)
    (back,) = read_rows(tmp_path / "summary.csv")
    assert back == row
    write_result(tmp_path / "run", row, {})
    assert read_result(tmp_path / "run") == row
    assert read_result(tmp_path / "nothing") is None
    header = (tmp_path / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"latency_s", "base_latency_s", "compile_s", "base_compile_s"} <= set(header) and "accelerated" not in header


@pytest.mark.parametrize(
    "column, cell, why",
    [
        ("speedup", "fast", "speedup='fast' is not a number"),
        ("steps", "4.5", "steps='4.5' is not an integer"),
        ("interleaved", "yes", "interleaved='yes' is not True or False"),
        ("accel_params", "{ratio: 0.5", "accel_params='{ratio: 0.5' is not JSON"),
        ("base_compile_s", "n/a", "base_compile_s='n/a' is not a number"),
        ("status", "done", "status='done' is not one of"),
    ],
)
def test_a_cell_that_does_not_read_back_names_its_line_and_column(tmp_path, column, cell, why):
    """A summary edited by hand or by another tool: the first cell its row cannot hold, by line and run id."""
    import csv

    from accel_bench.record import SummaryError

    path = tmp_path / "summary.csv"
    for run_id in ("a", "b"):
        append_summary(path, Row(run_id=run_id, timestamp="t", status="ok", steps=4, interleaved=True))
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1][column] = cell
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(SummaryError) as refused:
        read_rows(path)
    assert str(refused.value).startswith(f"{path} line 3 (run_id 'b'): {why}"), str(refused.value)


def test_pandas_reads_a_run_id_that_looks_like_a_number_as_text(tmp_path):
    """A run id is a hash's first 12 hex digits: ``13e885097810`` is a float to pandas (infinity)."""
    for run_id in ("13e885097810", "000000000012"):
        append_summary(tmp_path / "summary.csv", Row(run_id=run_id, timestamp="t", status="ok", error="1e5"))
    frame = read_frame(tmp_path / "summary.csv")
    assert list(frame.run_id) == ["13e885097810", "000000000012"] and list(frame.error) == ["1e5", "1e5"]
    assert frame.status.tolist() == ["ok", "ok"] and [r.run_id for r in read_rows(tmp_path / "summary.csv")] == [
        "13e885097810",
        "000000000012",
    ]


def test_achieved_tflops_and_the_share_of_the_devices_peak():
    from accel_bench.environment import peak_tflops

    assert peak_tflops("NVIDIA H200", "fp16") == 989.4 and peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("NVIDIA L40S", "fp16") == 362.1 and peak_tflops("NVIDIA L4", "fp16") == 121.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5 and peak_tflops("Tesla V100-SXM2-16GB", "bf16") is None
    assert (
        peak_tflops("Intel(R) Xeon(R) Processor", "fp32") is None
        and peak_tflops("NVIDIA GeForce GT 710", "fp16") is None
    )
    # whole names: an L40 is not an L4, a GH200 not an H200, an H200 NVL not an H200 SXM
    assert peak_tflops("NVIDIA L40", "fp16") == 181.0 and peak_tflops("NVIDIA GH200 480GB", "fp16") is None
    assert peak_tflops("NVIDIA H200 NVL", "fp16") == 835.5 and peak_tflops("NVIDIA H100 80GB HBM3", "fp16") == 989.4
    side = Side(latency_s=0.25, flops_per_image=500.0).rated(989.4)  # 500 GFLOP in 0.25 s: 2 TFLOP/s
    assert side.tflops == pytest.approx(2.0) and side.peak_share == pytest.approx(2.0 / 989.4)
    assert Side(latency_s=0.25).rated(989.4).tflops is None  # FLOPs not counted: no rate
    assert Side(latency_s=0.25, flops_per_image=500.0).rated(None).peak_share is None


@pytest.mark.parametrize("accel", ["tome", "tgate_deepcache_tome_compile"])
def test_the_console_table_keeps_its_columns_apart_whatever_the_methods_name(accel):
    row = Row(run_id="x", timestamp="t", status="ok", accel=accel, speedup=4.0, speedup_min=3.9, speedup_max=4.1)
    row.base, row.accelerated = Side(latency_s=0.4, compile_s=2.0), Side(latency_s=0.1, compile_s=30.0)
    header, latency = format_summary(row, "s.csv").splitlines()[1:3]
    assert header.split() == ["baseline", accel]
    assert latency.split()[-5:-2] == ["0.4000", "0.1000", "speedup"]
    # each figure ends where its column's name ends
    assert latency.index("0.1000") + len("0.1000") == header.index(accel) + len(accel)
    assert latency.index("0.4000") + len("0.4000") == header.index("baseline") + len("baseline")
