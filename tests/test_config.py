"""The config tree composes, and every validation rule stops ``run.py`` the same way: one line
naming the key, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import pytest
import torch

from accel_bench import experiment, metrics
from accel_bench.config import check, compose_run_config
from accel_bench.errors import ConfigError

from .conftest import ACCELS, run_cli


@pytest.mark.parametrize("pipeline", ["tiny", "tiny_xl", "sd15", "sd21", "sdxl"])
@pytest.mark.parametrize("scheduler", ["ddim", "dpmsolver", "unipc"])
def test_every_pipeline_and_scheduler_composes_and_passes(pipeline, scheduler):
    cfg = compose_run_config([f"pipeline={pipeline}", f"scheduler={scheduler}"])
    target = check(cfg).target
    assert target.family == ("sdxl" if pipeline in ("tiny_xl", "sdxl") else "sd")
    assert cfg.pipeline.resolution == {"tiny": 64, "tiny_xl": 64, "sd15": 512, "sd21": 768, "sdxl": 1024}[pipeline]


def test_real_pipelines_carry_their_hub_ids():
    ids = {p: compose_run_config([f"pipeline={p}"]).pipeline.model_id for p in ("sd15", "sd21", "sdxl")}
    assert ids == {
        "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "sd21": "stabilityai/stable-diffusion-2-1",
        "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    }


@pytest.mark.parametrize("accel", ACCELS)
def test_every_accel_option_composes_with_its_methods(accel):
    cfg = compose_run_config([f"accel={accel}"])
    assert cfg.accel.name == accel
    assert sorted(cfg.accel.methods) == sorted([] if accel == "none" else accel.split("_"))


def test_defaults_are_tiny_deepcache_on_builtin_prompts():
    cfg = compose_run_config()
    assert (cfg.pipeline.name, cfg.accel.name, cfg.scheduler.name, cfg.prompts.source) == (
        "tiny",
        "deepcache",
        "ddim",
        "builtin",
    )


def _empty_prompts(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n")
    return str(path)


RULES = [
    (["steps=0"], "steps"),
    (["batch_size=0"], "batch_size"),
    (["num_prompts=0"], "num_prompts"),
    (["num_prompts=1000"], "num_prompts"),
    (["warmup_batches=-1"], "warmup_batches"),
    (["accel.cache_interval=0"], "accel.cache_interval"),
    (["accel.cache_branch_id=9"], "accel.cache_branch_id"),
    (["accel=tome", "accel.ratio=0.8"], "accel.ratio"),
    (["accel=tome", "accel.max_downsample=3"], "accel.max_downsample"),
    (["pipeline=tiny_xl", "accel=tome", "accel.max_downsample=1"], "accel.max_downsample"),
    (["accel=tgate", "steps=20", "accel.gate_step=21"], "accel.gate_step"),
    (["accel=tgate", "accel.sp_interval=0"], "accel.sp_interval"),
    (["accel=tgate", "accel.fi_interval=0"], "accel.fi_interval"),
    (["accel=tgate", "accel.warm_up=-1"], "accel.warm_up"),
    (["accel=deepcache", "accel.ratio=0.5"], "accel.ratio"),
    (["accel=compile", "accel.mode=reduce-overhead", "device=cpu"], "accel.mode"),  # CUDA graphs need a GPU
    (["accel=deepcache_compile", "accel.mode=fastest"], "accel.mode"),
    (["accel=compile", "accel.compile_targets=[text_encoder]"], "accel.compile_targets"),
    (["accel=compile", "warmup_batches=0"], "warmup_batches"),
    (["baseline.compile=fast"], "baseline.compile"),
    (["baseline.compile=reduce-overhead", "device=cpu"], "baseline.compile"),  # CUDA graphs need a GPU
    (["accel=deepcache", "baseline.compile=default", "warmup_batches=0"], "warmup_batches"),
    (["metrics=[clip,fid]"], "metrics"),
    (["search_stage=final"], "search_stage"),
    (["lpips.net=resnet"], "lpips.net"),
    (["dtype=fp8"], "dtype"),
    (["dtype=fp16", "device=cpu"], "dtype"),
    ([f"device=cuda:{torch.cuda.device_count()}"], "device"),
    (["device=tpu"], "device"),
    (["resolution=100"], "resolution"),
    (["prompts=file"], "prompts.path"),
    (["prompts.path=EMPTY"], "prompts.path"),  # without prompts=file the builtin set would run instead
    (["prompts=file", "prompts.path=missing_prompts.txt"], "prompts.path"),
    (["prompts=file", "prompts.path=EMPTY"], "prompts.path"),
    (["pipeline=sd15", "pipeline.model_id=./no/such/folder"], "pipeline.model_id"),
    (["pipeline=tiny", "pipeline.weights=pretrained"], "pipeline.model_id"),
    (["pipeline.weights=trained"], "pipeline.weights"),
    (["scheduler=euler"], "scheduler"),  # a config group's option with no file: Hydra alone would exit 1
    (["pipeline=sd16"], "pipeline"),
    (["-m", "accel=tome,deepcach"], "accel"),  # every choice of a sweep, before anything runs
    (["-m", "+sweep=nope"], "sweep"),
    (["-m", "+sweep=[deepcache,nope]"], "sweep"),  # each option of a list
    (["steps=abc"], "steps"),  # a value its typed key cannot hold: Hydra alone would exit 1
    (["-m", "batch_size=2,2.5"], "batch_size"),
    (["no_such_setting=1"], "no_such_setting"),
    (["+no_such_setting=1"], "no_such_setting"),  # added by Hydra, read by nothing: the default would run
    (["++accel.cach_interval=4"], "accel.cach_interval"),
    (["-m", "+sweep=deepcache", "+clip.modle=x"], "clip.modle"),
    (["+steps=5"], "steps"),  # Hydra alone: several lines, exit 1
    # what only a sweep reads, given to one run (Hydra: several lines and exit 1, or one run of the defaults)
    (["accel=tome,deepcache"], "accel"),
    (["steps=range(2,4)"], "steps"),
    (["+sweep=deepcache"], "sweep"),
    (["hydra/launcher=slurm"], "hydra/launcher"),
    (["hydra/sweeper=search", "+sweep=tome"], "hydra/sweeper"),
    # what Hydra's grammar refuses (Hydra alone: several lines, exit 1), and deleting a setting every run reads
    (["run", "steps=2"], "override"),
    (["steps=[1,"], "override"),
    (["~steps"], "override"),
    (["clip=maybe"], "clip"),  # a whole section given a value
    (["-m", "hydra/launcher=slurn"], "hydra/launcher"),  # Hydra's own groups: the plug-ins' options and ours
    (["-m", "hydra/sweeper=search", "+sweep=deepcache", "hydra.sweeper.seed=-1"], "hydra.sweeper.seed"),
    (["-m", "accel=tome", "~no_such_setting"], "override"),
]


@pytest.mark.parametrize("args, key", RULES, ids=[" ".join(a) for a, _ in RULES])
def test_bad_value_one_line_exit_2_nothing_written(tmp_path, args, key):
    args = [a.replace("EMPTY", _empty_prompts(tmp_path)) for a in args]
    before = sorted(tmp_path.iterdir())
    result = run_cli([*args, f"summary_path={tmp_path / 'summary.csv'}"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {key}=") and "not allowed" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert sorted(tmp_path.iterdir()) == before  # no run directory, no summary


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["seed=-1"], "seed"),  # numpy's seeding refused it mid-run: a failed row
        (["seed=4294967296"], "seed"),
        (["steps=1001"], "steps"),  # the scheduler refused it mid-run: a failed row
        (["summary_path=TMP"], "summary_path"),  # a folder
        (["summary_path=TMP/file.txt/summary.csv"], "summary_path"),  # under a file
        (["cache_dir=TMP/file.txt/cache"], "cache_dir"),
        (["cache_dir=/proc/accel_bench_cache"], "cache_dir"),  # root passes os.access there: a failed row
        (["clip.model=no-such-clip"], "clip.model"),  # open_clip refused it mid-run: a failed row
        (["clip.model=ViT-B-32", "clip.pretrained=no-such-tag"], "clip.pretrained"),
        (["clip.pretrained=laion2b_s34b_b88k"], "clip.pretrained"),  # auto picks its own: it would be ignored
        (["lpips.backbone=imagenet"], "lpips.backbone"),
        (["resolution=8"], "resolution"),  # SSIM's window: a failed row
        (["resolution=24"], "resolution"),  # LPIPS's AlexNet pools it away: a failed row
        (["resolution=8", "metrics=[clip,lpips]", "lpips.net=vgg"], "resolution"),
    ],
)
def test_what_would_fail_mid_run_is_refused_before_it(tmp_path, overrides, key):
    (tmp_path / "file.txt").write_text("x")
    cfg = compose_run_config([o.replace("TMP", str(tmp_path)) for o in overrides])
    with pytest.raises(ConfigError) as refused:
        check(cfg)
    assert refused.value.key == key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_clip_left_out_of_the_metrics_is_not_loaded_to_check_its_name(tmp_path):
    check(compose_run_config(["metrics=[psnr]", "clip.model=no-such-clip", f"summary_path={tmp_path / 's.csv'}"]))
    check(compose_run_config(["clip.model=ViT-B-32", "clip.pretrained=openai", f"summary_path={tmp_path / 's.csv'}"]))


def test_each_metric_says_the_smallest_image_it_scores():
    """What each metric's check refuses is what it cannot score, and one pixel more it can."""
    import numpy as np

    for metric, overrides in (("ssim", []), ("lpips", ["lpips.net=alex"]), ("lpips", ["lpips.net=vgg"])):
        cfg = compose_run_config(overrides)
        least = metrics.METRICS[metric].min_side(cfg.get(metric))
        (scorer,) = metrics.build([metric], cfg, "random", torch.device("cpu"))
        small, fits = (
            np.random.default_rng(0).random((1, side, side, 3), dtype=np.float32) for side in (least - 1, least)
        )
        scorer.score(fits, fits, ["a"], scorer.reference(fits, ["a"]))
        with pytest.raises(RuntimeError):
            scorer.score(small, small, ["a"], scorer.reference(small, ["a"]))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["steps=abc"], "steps"),
        (["accel=tome", "accel.ratio=x"], "accel.ratio"),
        (["top_k=3"], "top_k"),
        (["scheduler=euler"], "scheduler"),
    ],
)
def test_composing_outside_run_py_refuses_the_same_overrides(overrides, key):
    """Bench scripts compose run configs themselves: a bad override is the same one-line ConfigError."""
    with pytest.raises(ConfigError) as refused:
        compose_run_config(overrides)
    assert refused.value.key == key


@pytest.mark.parametrize(
    "arguments, config_name",
    [
        (["--cfg", "job", "steps=2"], "config"),
        (["-cn", "config", "--info", "config", "-m", "steps=2,3"], "config"),
        (["--config-dir", "extra", "+sweep=deepcache", "-m"], "config"),
        (["~hydra.sweeper.grids.tgate_compile", "-m", "+sweep=strong"], "config"),
        (["--cfg", "job", "sweep_dir=x"], "postprocess"),
        (["-p", "hydra", "--cfg", "hydra", "num_prompts=2"], "evaluate"),
    ],
)
def test_hydras_flags_and_their_values_are_not_taken_for_overrides(arguments, config_name):
    from accel_bench.overrides import check_overrides

    check_overrides(arguments, config_name)  # no ConfigError
    with pytest.raises(ConfigError) as refused:
        check_overrides([*arguments, "stray"], config_name)
    assert (refused.value.key, refused.value.value) == ("override", "stray")
    assert "missing EQUAL" in refused.value.allowed


@pytest.mark.parametrize(
    "arguments, config_name, key, value",
    [
        (["save_images=2"], "config", "save_images", 2),
        (["interleave=yes"], "config", "interleave", "yes"),
        (["accel=deepcache_compile", "accel.fullgraph=1"], "config", "accel.fullgraph", 1),
        (["-m", "count_flops=true,0"], "config", "count_flops", 0),  # every choice of a sweep
        (["confirm=on"], "postprocess", "confirm", "on"),
        (["allow_unsandboxed=2"], "evaluate", "allow_unsandboxed", 2),
    ],
)
def test_a_true_or_false_setting_takes_only_true_or_false(arguments, config_name, key, value):
    """OmegaConf would read 2, 1, yes or on as true: the run would go on with a guess."""
    from accel_bench import postprocess
    from accel_bench.evaluate import config as evaluate_config
    from accel_bench.overrides import check_overrides

    postprocess.register_configs()
    evaluate_config.register_configs()
    with pytest.raises(ConfigError) as refused:
        check_overrides(arguments, config_name)
    assert (refused.value.key, refused.value.value) == (key, value)
    assert refused.value.allowed.startswith("true or false")
    check_overrides([*arguments[:-1], f"{key}=false"], config_name)  # the same with false: no ConfigError
    check_overrides([*arguments[:-1], f"{key}='True'"], config_name)  # quoted, it still says true


def test_hydras_groups_take_the_options_a_config_dir_adds(tmp_path):
    from accel_bench.overrides import check_overrides

    (tmp_path / "hydra" / "launcher").mkdir(parents=True)
    (tmp_path / "hydra" / "launcher" / "our_cluster.yaml").write_text("# a lab's own launcher settings\n")
    with pytest.raises(ConfigError) as refused:
        check_overrides(["-m", "hydra/launcher=our_cluster"], "config")
    assert refused.value.key == "hydra/launcher" and "slurm" in refused.value.allowed
    check_overrides(["--config-dir", str(tmp_path), "-m", "hydra/launcher=our_cluster"], "config")  # Hydra's to judge


def test_several_named_sweeps_are_one_space():
    """``+sweep=[deepcache,tome]``: both files' grids, as the grid and search sweepers read them."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from accel_bench.config import CONF_DIR
    from accel_bench.overrides import check_overrides

    check_overrides(["-m", "+sweep=[deepcache,tome]"], "config")  # no ConfigError
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["+sweep=[deepcache,tome]"], return_hydra_config=True)
    assert sorted(cfg.hydra.sweeper.grids) == ["deepcache", "tome"]


def test_invalid_job_becomes_an_invalid_row(tmp_path):
    """Inside a sweep job (no run-start check), a bad value is recorded, not raised."""
    cfg = compose_run_config(["accel.cache_interval=0", f"summary_path={tmp_path / 'summary.csv'}"])
    row = experiment.run(cfg, tmp_path / "job")
    assert row.status == "invalid" and row.error.startswith("accel.cache_interval=0")
    assert (tmp_path / "job" / "result.json").exists()
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 2


def _limited_keys():
    """(config name, overrides it needs, key, limit) for every limited setting of our configs: the run's
    (its metric sections and each method's parameters), the evaluator's, post-process's, the search's."""
    import dataclasses

    from accel_bench import accelerators, postprocess
    from accel_bench.config import RunConfig, group_options
    from accel_bench.evaluate.config import EvaluateConfig
    from accel_bench.limits import limit_of
    from accel_bench.metrics import ClipConfig, LpipsConfig
    from hydra_plugins.accel_bench_sweeper.search_sweeper import SearchSweeperConf

    def limited(schema, prefix=""):
        return [
            (prefix + f.name, limit_of(schema, f.name)) for f in dataclasses.fields(schema) if limit_of(schema, f.name)
        ]

    sections = limited(ClipConfig, "clip.") + limited(LpipsConfig, "lpips.")
    cases = [("config", [], key, limit) for key, limit in limited(RunConfig) + sections]
    cases += [("evaluate", [], key, limit) for key, limit in limited(EvaluateConfig) + sections]
    cases += [("postprocess", [], key, limit) for key, limit in limited(postprocess.PostprocessConfig)]
    search = ["-m", "hydra/sweeper=search", "+sweep=deepcache"]
    cases += [("config", search, key, limit) for key, limit in limited(SearchSweeperConf, "hydra.sweeper.")]
    for name, method in accelerators.METHODS.items():
        option = next(o for o in group_options("accel") if name in compose_run_config([f"accel={o}"]).accel.methods)
        cases += [("config", [f"accel={option}"], key, limit) for key, limit in limited(method.Params, "accel.")]
    return cases


def _refusal(config_name, overrides):
    """The ConfigError a command would stop with: the command line's check, else its config's check."""
    from accel_bench import postprocess
    from accel_bench.config import compose_config
    from accel_bench.evaluate import config as evaluate_config
    from accel_bench.overrides import check_overrides

    postprocess.register_configs()
    evaluate_config.register_configs()
    checker = {"config": check, "evaluate": evaluate_config.check, "postprocess": postprocess.check}[config_name]
    with pytest.raises(ConfigError) as refused:
        check_overrides(overrides, config_name)
        checker(compose_config(config_name, [o for o in overrides if o != "-m"]))
    return refused.value


LIMITED = _limited_keys()


@pytest.mark.parametrize("config_name, needs, key, limit", LIMITED, ids=[f"{c[0]} {c[2]}" for c in LIMITED])
def test_a_limited_setting_says_its_limit_whatever_the_bad_value(tmp_path, monkeypatch, config_name, needs, key, limit):
    """A value of the wrong type (refused by Hydra's typed config before any check) and a value out of
    range (refused by the config's own check) get the same words: the limit on the setting's field."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "summary.csv").write_text("")
    needs = [*needs, f"sweep_dir={sweep}"] if config_name == "postprocess" else needs
    wrong_type = _refusal(config_name, [*needs, f"{key}=abc"])
    assert (wrong_type.key, wrong_type.value, wrong_type.allowed) == (key, "abc", limit.allowed)
    if key.startswith("hydra.sweeper.") or key.startswith("quality_") or key == "quality_budget":
        return  # the search checks its range when it starts; those below are checked with other settings
    below = next(v for v in (3, limit.lowest - 1, limit.lowest, limit.lowest + 1) if not limit.holds(v))
    below = int(below) if limit.integer else below
    out_of_range = _refusal(config_name, [*needs, f"{key}={below}"])
    assert (out_of_range.key, out_of_range.value, out_of_range.allowed) == (key, below, limit.allowed)
