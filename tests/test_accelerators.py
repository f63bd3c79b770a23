"""Every method and composition on both tiny layouts: it runs, it changes the computation, and
leaving it restores the exact baseline pipeline (state and images)."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
import torch._inductor.config

from accel_bench.accelerators import Target, applied
from accel_bench.config import check, compose_run_config
from accel_bench.errors import ConfigError
from accel_bench.measure import FlopCount, prompt_generators
from accel_bench.pipelines import set_scheduler

from .conftest import ACCELS, FAST, fast_overrides

PROMPTS = ["a red fox asleep in the snow", "a lighthouse in a thunderstorm"]


def generate(call):
    return call(
        prompt=PROMPTS, generator=prompt_generators(0, 0, len(PROMPTS)), num_inference_steps=4, output_type="np"
    ).images


def module_state(pipe):
    """Everything the packages patch: classes, instance attributes, hooks, which tensor each parameter is
    and its layout; and the pipeline's attributes."""
    state = [sorted(pipe.__dict__)]
    for component_name, component in sorted(pipe.components.items()):
        if isinstance(component, torch.nn.Module):
            for name, module in component.named_modules():
                hooks = [len(getattr(module, h)) for h in ("_forward_hooks", "_forward_pre_hooks")]
                weights = [(n, id(p), type(p), p.stride()) for n, p in module.named_parameters(recurse=False)]
                state.append((component_name, name, type(module), sorted(module.__dict__), hooks, weights))
    return state


def prepared(pipes, pipeline, accel, *overrides):
    cfg = compose_run_config([f"pipeline={pipeline}", *fast_overrides(accel), *overrides])
    pipe = pipes[pipeline]
    set_scheduler(pipe, cfg.scheduler)
    return pipe, check(cfg).methods


@pytest.mark.parametrize("pipeline", ["tiny", "tiny_xl"])
@pytest.mark.parametrize("accel", ACCELS)
def test_composition_runs_and_restores_exact_baseline(pipes, pipeline, accel):
    pipe, methods = prepared(pipes, pipeline, accel)
    base = generate(pipe)
    state = module_state(pipe)
    with applied(pipe, methods) as accelerated:
        accelerated.reset(7)
        first = generate(accelerated.call)
        accelerated.reset(7)
        second = generate(accelerated.call)
    assert np.array_equal(first, second), "reset must make accelerated calls repeatable"
    assert np.array_equal(first, base) == (not methods), "an accelerator must change the computation"
    assert module_state(pipe) == state
    assert np.array_equal(generate(pipe), base)


# the production recipe's methods: they change how the pipeline computes, not what (compile: its own tests)
RECIPE = {
    "fused_qkv": [],
    "channels_last": [],
    "sdpa": ["accel.sdpa_backend=math"],
    "quantize": ["accel.quantize_targets=[unet,vae_decoder]"],
    "recipe_eager": ["accel=fast", "accel.methods=[fused_qkv,channels_last,sdpa,quantize]", "accel.sdpa_backend=math"],
    "deepcache_recipe": [
        "accel=deepcache_fast",
        "accel.methods=[deepcache,fused_qkv,channels_last,sdpa,quantize]",
        "accel.sdpa_backend=flash",
    ],
    "tgate_recipe": [  # T-GATE's attention computes its own projections: the recipe less fused QKV
        "accel=tgate_fast",
        "accel.methods=[tgate,channels_last,sdpa,quantize]",
        "accel.gate_step=2",
        "accel.sdpa_backend=math",
    ],
    "tome_recipe": [
        "accel=tome_fast",
        "accel.methods=[tome,fused_qkv,channels_last,sdpa,quantize]",
        "accel.sdpa_backend=math",
    ],
}
MISSION = ("deepcache", "tgate", "tome")  # the methods a recipe case is judged against
NO_COMPILE = ["accel.mode=null", "accel.fullgraph=null", "accel.compile_targets=null"]


def quantized(pipe):
    """The UNet's linear layers by whether torchao swapped their weight: (attention blocks', the others')."""
    linear = [
        (name, type(m.weight) is not torch.nn.Parameter)
        for name, m in pipe.unet.named_modules()
        if type(m) is torch.nn.Linear
    ]
    return [q for name, q in linear if "attentions." in name], [q for name, q in linear if "attentions." not in name]


def placed(pipe):
    """Which tensor each module of the pipeline computes with, and where: a captured CUDA graph reads
    its weights at the addresses it was recorded with."""
    found = []
    for component_name, component in sorted(pipe.components.items()):
        if isinstance(component, torch.nn.Module):
            for name, t in [*component.named_parameters(), *component.named_buffers()]:
                plain = type(t) in (torch.Tensor, torch.nn.Parameter)  # a quantized subclass has no storage of its own
                found.append(
                    (component_name, name, id(t), t.data_ptr() if plain else None, t.stride() if plain else None)
                )
    return found


@pytest.mark.parametrize("pipeline", ["tiny", "tiny_xl"])
@pytest.mark.parametrize("case", sorted(RECIPE))
def test_recipe_methods_compute_the_same_images_and_restore_exactly(pipes, pipeline, case):
    composed = case.endswith("_recipe") or case == "recipe_eager"  # the recipe's files without compile
    overrides = [*RECIPE[case], *NO_COMPILE] if composed else [f"accel={case}", *RECIPE[case]]
    cfg = compose_run_config([f"pipeline={pipeline}", *FAST, *overrides])
    pipe = pipes[pipeline]
    set_scheduler(pipe, cfg.scheduler)
    methods = check(cfg).methods
    original, state, placed_before = generate(pipe), module_state(pipe), placed(pipe)
    flash, math = torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()
    inductor = torch._inductor.config.get_config_copy()  # torchao's configs would set tuning process-wide
    with applied(pipe, methods):
        first = placed(pipe)
    with applied(pipe, methods) as accelerated:
        # each pass applies its side again: the same tensors at the same addresses, so graphs replay
        assert placed(pipe) == first
        assert torch._inductor.config.get_config_copy() == inductor
        names = {m.name for m in methods}
        if "fused_qkv" in names:
            assert pipe.fusing_unet and pipe.fusing_vae
            assert any(hasattr(m, "to_qkv") for m in pipe.unet.modules())
        if "channels_last" in names:
            conv = next(m for m in pipe.unet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
            assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
        if "quantize" in names:
            # the attention blocks' layers only: the time embedding's have one row per image (int8 matmuls need > 16)
            token_wise, per_image = quantized(pipe)
            assert token_wise and all(token_wise) and per_image and not any(per_image)
        if "sdpa" in names:
            backend = cfg.accel.sdpa_backend
            assert (torch.backends.cuda.math_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == (
                backend == "math",
                backend == "flash",
            )
        accelerated.reset(7)
        images = generate(accelerated.call)
    base = original
    if names & set(MISSION):  # against the method alone
        with applied(pipe, [m for m in methods if m.name in MISSION]) as plain:
            plain.reset(7)
            base = generate(plain.call)
    mse = float(np.mean((images - base) ** 2))
    assert mse == 0 or 10 * np.log10(1 / mse) > 40, (
        f"{case}: {10 * np.log10(1 / mse):.1f} dB from the same method without it"
    )
    assert module_state(pipe) == state
    assert placed(pipe) == placed_before
    assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()) == (flash, math)
    assert torch._inductor.config.get_config_copy() == inductor
    assert np.array_equal(generate(pipe), original)


def _first_conv(pipe):
    return next(m for m in pipe.unet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))


def _first_query(pipe):
    return next(m.to_q for n, m in pipe.unet.named_modules() if n.endswith("attn1"))


# a method that makes tensors from weights -> a layer whose weight it makes them from
MAKERS = {"channels_last": _first_conv, "fused_qkv": _first_query, "quantize": _first_query}


@pytest.mark.parametrize("method", sorted(MAKERS))
def test_weights_changed_between_applications_are_made_again_not_replayed(pipes, method):
    pipe, methods = prepared(pipes, "tiny", method)
    weight = MAKERS[method](pipe).weight

    def images():
        with applied(pipe, methods) as accelerated:
            accelerated.reset(7)
            return generate(accelerated.call)

    first = images()
    with torch.no_grad():
        weight.mul_(2)  # in place: the same tensor, a new version
    try:
        assert not np.array_equal(images(), first), f"{method} ran on what it made from the old weights"
    finally:
        with torch.no_grad():
            weight.mul_(0.5)
    assert np.array_equal(images(), first)


def test_restoration_survives_an_exception_inside(pipes):
    pipe, methods = prepared(pipes, "tiny", "tgate_deepcache_tome")
    generate(pipe)
    state = module_state(pipe)
    with pytest.raises(RuntimeError, match="boom"):
        with applied(pipe, methods):
            assert module_state(pipe) != state
            raise RuntimeError("boom")
    assert module_state(pipe) == state


def test_deepcache_reset_never_wraps_the_unet_twice(pipes):
    pipe, (deepcache,) = prepared(pipes, "tiny", "deepcache")
    with applied(pipe, [deepcache]) as accelerated:
        for _ in range(3):
            accelerated.reset(0)
        # wrapped twice, the stored forward would be the previous wrapper, not the UNet's method
        assert inspect.ismethod(deepcache.helper.function_dict["unet_forward"])
        generate(accelerated.call)


def test_tome_reset_seeds_its_generator(pipes):
    pipe, (tome,) = prepared(pipes, "tiny", "tome")
    with applied(pipe, [tome]) as accelerated:
        accelerated.reset(1234)
        assert pipe.unet._tome_info["args"]["generator"].initial_seed() == 1234


def test_tgate_with_deepcache_uses_the_one_deepcache_helper(pipes):
    pipe, methods = prepared(pipes, "tiny_xl", "tgate_deepcache")
    deepcache = next(m for m in methods if m.name == "deepcache")
    with applied(pipe, methods) as accelerated:
        assert pipe.deepcache is deepcache.helper
        assert accelerated.call.func == pipe.tgate
        assert accelerated.call.keywords["gate_step"] == 2
    assert not hasattr(pipe, "tgate") and not hasattr(pipe, "deepcache")


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["accel=deepcache", "accel.cache_interval=0"], "accel.cache_interval"),
        (["accel=deepcache", "accel.cache_branch_id=-1"], "accel.cache_branch_id"),
        (["accel=deepcache", "accel.cache_branch_id=9"], "accel.cache_branch_id"),
        (["accel=tome", "accel.ratio=-0.1"], "accel.ratio"),
        (["accel=tome", "accel.sx=3", "accel.ratio=0.9"], "accel.ratio"),
        (["accel=tome", "accel.sy=0"], "accel.sy"),
        (["accel=tome", "accel.max_downsample=3"], "accel.max_downsample"),
        (["pipeline=tiny_xl", "accel=tome", "accel.max_downsample=1"], "accel.max_downsample"),
        (["accel=tgate", "accel.gate_step=-1"], "accel.gate_step"),
        (["accel=tgate", "steps=20", "accel.gate_step=21"], "accel.gate_step"),
        (["accel=tgate", "accel.sp_interval=0"], "accel.sp_interval"),
        (["accel=tgate", "accel.fi_interval=0"], "accel.fi_interval"),
        (["accel=tgate", "accel.warm_up=-1"], "accel.warm_up"),
        (["accel=deepcache", "accel.gate_step=3"], "accel.gate_step"),
        (["accel=none", "accel.ratio=0.5"], "accel.ratio"),
        (["accel=deepcache_tome", "accel.ratio=null"], "accel.ratio"),
        (["accel=deepcache", "accel.methods=[deepcache,magic]"], "accel.methods"),
        (["accel=sdpa", "accel.sdpa_backend=cudnn"], "accel.sdpa_backend"),  # a CPU has flash and math
        (["accel=sdpa", "accel.sdpa_backend=fastest"], "accel.sdpa_backend"),
        (["accel=quantize", "accel.quantization=fp8_dynamic"], "accel.quantization"),  # fp8 needs sm_89+
        (["accel=quantize", "accel.quantization=int3"], "accel.quantization"),
        (["accel=quantize", "accel.quantize_targets=[text_encoder]"], "accel.quantize_targets"),
        (["accel=quantize", "accel.quantize_targets=[unet,unet]"], "accel.quantize_targets"),
        (["accel=tgate", "accel.methods=[tgate,fused_qkv]"], "accel.methods"),  # T-GATE's attention skips to_qkv
        (["baseline.recipe=deepcache"], "baseline.recipe"),  # changes what is computed: not a baseline
        (["baseline.recipe=nothing"], "baseline.recipe"),
        (["baseline.recipe=fast"], "baseline.recipe"),  # max-autotune captures CUDA graphs: not on a CPU
        (["baseline.recipe=sdpa", "baseline.compile=default"], "baseline.compile"),  # the recipe compiles nothing
        (["accel=compile", "accel.compile_targets=[unet,step]"], "accel.compile_targets"),  # the step holds the UNet
        (["accel=compile", "accel.compile_targets=[step,step]"], "accel.compile_targets"),
        (["baseline.whole_step=true"], "baseline.whole_step"),  # nothing compiled to hold the step
        (["baseline.recipe=sdpa", "baseline.whole_step=true"], "baseline.whole_step"),
        (["baseline.recipe=quantize", "baseline.whole_step=true"], "baseline.whole_step"),
    ],
)
def test_bad_parameters_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as refused:
        check(compose_run_config(overrides))
    assert refused.value.key == key


@pytest.mark.parametrize(
    "overrides",
    [
        ["accel=deepcache", "accel.cache_interval=1", "accel.cache_branch_id=8"],  # tiny: 3 down blocks
        ["pipeline=sd15", "pipeline.weights=random", "accel=deepcache", "accel.cache_branch_id=11"],
        ["pipeline=sdxl", "pipeline.weights=random", "accel=deepcache", "accel.cache_branch_id=8"],
        ["accel=tome", "accel.ratio=0.75"],
        ["accel=tome", "accel.ratio=0", "accel.max_downsample=8"],
        ["pipeline=sdxl", "accel=tome"],  # the pipeline's default max_downsample (2) is valid there
        ["accel=tgate", "steps=20", "accel.gate_step=20"],
        ["accel=tgate", "accel.gate_step=0", "accel.warm_up=0"],
        ["accel=quantize", "accel.quantization=int8_weight_only", "accel.quantize_targets=[vae_decoder,unet]"],
        ["accel=sdpa", "accel.sdpa_backend=math"],
        ["accel=fast", "accel.mode=max-autotune-no-cudagraphs", "baseline.recipe=fast", "baseline.compile=default"],
        ["baseline.recipe=compile"],
        [
            "accel=deepcache_compile",
            "accel.compile_targets=[vae_decoder,step]",
            "baseline.compile=default",
            "baseline.whole_step=true",
        ],
    ],
)
def test_boundary_values_are_accepted(overrides):
    check(compose_run_config(overrides))


def test_fp8_needs_a_gpu_that_has_it_and_every_gpu_backend_is_offered_on_one():
    from accel_bench.accelerators.quantize import Quantize, QuantizeParams
    from accel_bench.accelerators.sdpa import SDPA, SDPAParams

    fp8 = QuantizeParams("fp8_dynamic", ["unet"])
    gpu = dict(pipeline="sd15", family="sd", down_blocks=4, steps=20, device="cuda")
    Quantize.check(fp8, Target(**gpu, capability=(9, 0)))
    with pytest.raises(ConfigError, match=r"int8_dynamic \| int8_weight_only on this GPU \(fp8 needs"):
        Quantize.check(fp8, Target(**gpu, capability=(8, 0)))
    for backend in ("flash", "efficient", "cudnn", "math"):
        SDPA.check(SDPAParams(backend), Target(**gpu, capability=(8, 0)))


def test_recipes_are_the_accel_configs_that_change_only_how_the_pipeline_computes():
    from accel_bench.config import recipes

    found = recipes()
    assert sorted(found) == ["channels_last", "compile", "fast", "fused_qkv", "quantize", "sdpa"]
    # a baseline reads the recipe's file as accel=fast composes it
    composed = compose_run_config(["accel=fast"]).accel
    assert found["fast"] == composed and list(composed.methods) == ["fused_qkv", "channels_last", "quantize", "compile"]


def test_sdxl_branch_range_follows_its_unet():
    with pytest.raises(ConfigError, match=r"0\.\.8"):
        check(
            compose_run_config(
                ["pipeline=sdxl", "pipeline.weights=random", "accel=deepcache", "accel.cache_branch_id=9"]
            )
        )


@pytest.mark.parametrize("pipeline", ["tiny", "tiny_xl"])
@pytest.mark.parametrize("accel", ACCELS)
def test_flop_count_agrees_with_flop_counter_mode(pipes, pipeline, accel):
    """measure's lean FlopCount must total what FlopCounterMode (module attribution, decompositions) does."""
    from torch.utils.flop_counter import FlopCounterMode

    pipe, methods = prepared(pipes, pipeline, accel)
    with applied(pipe, methods) as accelerated:
        accelerated.reset(3)
        reference = FlopCounterMode(display=False)
        with reference:
            generate(accelerated.call)
        accelerated.reset(3)
        lean = FlopCount()
        with lean:
            generate(accelerated.call)
        accelerated.reset(3)
        one_image = FlopCount()
        with one_image:
            accelerated.call(
                prompt=PROMPTS[:1], generator=prompt_generators(0, 0, 1), num_inference_steps=4, output_type="np"
            )
    assert lean.total > 0 and lean.total == reference.get_total_flops()
    # measure counts a warm-up batch and divides by its images: the count must grow image for image
    assert lean.total == len(PROMPTS) * one_image.total


def eager_deepcache(pipe, deepcache):
    with applied(pipe, [deepcache]) as eager:
        eager.reset(3)
        return generate(eager.call)


def test_compile_stacks_on_a_method_and_leaving_restores_the_eager_modules(pipes):
    """torch.compile (inductor, on the CPU) on the tiny VAE decoder, small enough to compile in seconds."""
    pipe, (deepcache, compiled) = prepared(pipes, "tiny", "deepcache_compile", "accel.compile_targets=[vae_decoder]")
    state, expected = module_state(pipe), eager_deepcache(pipe, deepcache)
    with applied(pipe, [deepcache, compiled]) as accelerated:
        assert "_compiled_call_impl" in pipe.vae.decoder.__dict__ and "_compiled_call_impl" not in pipe.unet.__dict__
        accelerated.reset(3)
        images = generate(accelerated.call)
    assert np.abs(images - expected).max() < 1e-4  # the same computation, compiled
    assert module_state(pipe) == state and "_compiled_call_impl" not in pipe.vae.decoder.__dict__
    assert compiled.record() == {"compile_targets": ["vae_decoder"], "fullgraph": False, "mode": "default"}


def test_compile_cost_is_the_warm_up_beyond_steady_batches():
    from accel_bench.measure import Measurement
    from accel_bench.record import compile_cost_s

    measured = Measurement([1.0, 1.2, 1.0], [2, 2, 2], 1, [31.0, 1.5], None, None, np.zeros((6, 1, 1, 3)))
    assert compile_cost_s(measured) == pytest.approx(30.5)


def test_deepcache_on_a_compiled_unet_is_two_graphs_each_traced_once(pipes, traced_only):
    """Traced through DeepCache's own wrappers, a compiled UNet recompiles at every step; its full and
    cached steps as two graphs are traced once (the full one again once its cache exists) and
    give eager DeepCache's images exactly."""
    import torch._dynamo

    pipe, (deepcache, compiled) = prepared(
        pipes, "tiny", "deepcache_compile", "accel.fullgraph=true", "accel.cache_interval=3"
    )
    state, expected = module_state(pipe), eager_deepcache(pipe, deepcache)
    for _ in range(2):  # re-applied as every measured pass does
        with applied(pipe, [deepcache, compiled]) as accelerated:
            for _ in range(2):
                accelerated.reset(3)
                assert np.array_equal(generate(accelerated.call), expected)
    full, cached, full_again = (len(graph.graph.nodes) for graph in traced_only)  # 4 steps: full, cached, cached, full
    assert full == full_again and cached < full / 4
    assert module_state(pipe) == state
    assert torch._dynamo.config.fail_on_recompile_limit_hit is False  # set while compiled, put back


@pytest.mark.parametrize("pipeline", ["tiny", "tiny_xl"])
@pytest.mark.parametrize("accel", ["tome_compile", "deepcache_tome_compile"])
def test_tome_on_a_compiled_unet_draws_on_the_host_and_gives_tomesds_images(pipes, pipeline, accel, traced_only):
    """tomesd's generator and size hook cannot be traced: the graph-safe ToMe takes the same draws on
    the host, so the compiled UNet is traced once per application (DeepCache's steps: three) and gives
    eager tomesd's images exactly, for every seed (another seed's destinations give other images: the
    draws reach the graph); under DeepCache's cached steps only the blocks that run draw, as eagerly."""
    from accel_bench.metrics.fidelity import psnr_db

    pipe, methods = prepared(pipes, pipeline, accel, "accel.fullgraph=true", "accel.max_downsample=2")
    state = module_state(pipe)
    with applied(pipe, methods[:-1]) as eager:
        expected = {}
        for seed in (3, 4):
            eager.reset(seed)
            expected[seed] = generate(eager.call)
    assert psnr_db(expected[3], expected[4]).max() < 60
    traced = []
    for _ in range(2):
        with applied(pipe, methods) as accelerated:
            for seed in (3, 4, 3):
                accelerated.reset(seed)
                assert np.array_equal(generate(accelerated.call), expected[seed])
        traced.append(len(traced_only) - sum(traced))
    # three calls of four steps: one graph, or DeepCache's full and cached steps (the full one again once
    # its cache exists); none again when the methods are applied anew, as every measured pass does
    assert traced == [1 if accel == "tome_compile" else 3, 0]
    assert module_state(pipe) == state


@pytest.mark.parametrize("pipeline", ["tiny", "tiny_xl"])
@pytest.mark.parametrize(
    "accel, schedule, phases",
    [
        ("tgate_compile", [], 3),  # gate_step 2: warm-up, the gate, after it
        ("tgate_compile", ["accel.gate_step=3", "accel.warm_up=0", "accel.sp_interval=2"], 4),  # caching, reusing
        ("tgate_tome_compile", [], 3),
        # DeepCache restarted at the gate (its batch halves): full steps before, at and after it (the first
        # again once its cache exists), a cached one after it
        ("tgate_deepcache_compile", [], 5),
        ("tgate_deepcache_tome_compile", [], 5),  # and ToMe drawing on the host for the blocks each phase runs
    ],
)
def test_tgate_on_a_compiled_unet_is_one_graph_per_phase_and_gives_its_images(
    pipes, pipeline, accel, schedule, phases, traced_only
):
    """tgate's loop gives every Attention a new forward at every step, which dynamo would retrace at
    every step; with the forwards kept per set of flags, the UNet is traced once per phase of the
    schedule, not again at the next call nor when applied anew, and gives eager T-GATE's images exactly."""
    pipe, methods = prepared(pipes, pipeline, accel, "accel.fullgraph=true", *schedule)
    state = module_state(pipe)
    with applied(pipe, methods[:-1]) as eager:
        eager.reset(3)
        expected = generate(eager.call)
    for _ in range(2):  # applied anew, as every measured pass does
        with applied(pipe, methods) as accelerated:
            for _ in range(2):
                accelerated.reset(3)
                assert np.array_equal(generate(accelerated.call), expected)
    assert len(traced_only) == phases
    assert module_state(pipe) == state


def test_recompiling_past_the_limit_fails_and_names_what_recompiled(traced_only):
    """What T-GATE and ToMe do to a compiled UNet on the GPU (bench/README.md "Strong baselines"), on a
    toy: Python state the graph branches on changes at every call. Dynamo would run eager from its
    limit on, in silence; under the compile plug-in the call fails, naming the function and the guard."""
    import torch._dynamo

    from accel_bench.accelerators.compile import RecompileLimit

    class Stepped(torch.nn.Module):
        step = 0

        def forward(self, x):
            return x * self.step

    module = Stepped()
    with RecompileLimit() as limit:
        compiled = limit.explained(torch.compile(module))
        with pytest.raises(
            RuntimeError,
            match=r"torch.compile: dynamo recompiled 'forward' .* past its recompile_limit \(8; last guard failed: .*step.*\)",
        ):
            for step in range(20):
                module.step = step
                compiled(torch.ones(2))
        assert len(traced_only) == 8
    assert torch._dynamo.config.fail_on_recompile_limit_hit is False


def psnr(a, b):
    return 10 * np.log10(1.0 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-20))


@pytest.mark.parametrize(
    ("pipeline", "accel", "scheduler", "graphs"),
    [
        ("tiny", "tome_compile", "ddim", 1),
        ("tiny_xl", "compile", "unipc", 1),
        ("tiny", "deepcache_tome_compile", "unipc", 3),  # DeepCache's full and cached steps, the full again
        # T-GATE stops guiding at its gate (the batch halves) and restarts DeepCache there: five phases
        ("tiny", "tgate_deepcache_tome_compile", "dpmsolver", 5),
    ],
)
def test_the_whole_step_is_one_graph_per_phase_and_gives_the_schedulers_images(
    pipes, pipeline, accel, scheduler, graphs, traced_only
):
    """UNet, guidance and the scheduler's step traced as one graph, once per phase of the methods under
    it, not again at the next call nor when applied anew; the scheduler's step as the linear map probed
    from it gives the eager methods' images up to float rounding."""
    pipe, methods = prepared(
        pipes, pipeline, accel, f"scheduler={scheduler}", "accel.fullgraph=true", "accel.compile_targets=[step]"
    )
    state = module_state(pipe)
    with applied(pipe, methods[:-1]) as eager:
        eager.reset(3)
        expected = generate(eager.call)
    for _ in range(2):
        with applied(pipe, methods) as accelerated:
            assert "step" in pipe.scheduler.__dict__
            for _ in range(2):
                accelerated.reset(3)
                images = generate(accelerated.call)
                assert psnr(images, expected) > 100  # float32 rounding: 135 dB; guidance 1% off: 70 dB
    assert len(traced_only) == graphs
    assert module_state(pipe) == state and not {"set_timesteps", "step"} & set(pipe.scheduler.__dict__)


def test_a_cuda_graph_mode_fails_where_inductor_would_run_a_graph_uncaptured(pipes):
    """Inductor skips CUDA graphs for a graph it cannot capture (a CPU tensor among its inputs, a
    mutation it cannot replay), warns once and runs it uncaptured: the row would pass for a CUDA-graph
    one. While a CUDA-graph mode is applied, inductor's own skip raises instead; other modes and
    leaving put inductor's default back."""
    import torch._inductor.config as inductor
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    from accel_bench.accelerators.compile import Compile, CompileParams

    gpu = Target(pipeline="tiny", family="sd", down_blocks=3, steps=4, device="cuda", capability=(9, 0))
    for mode, captured in (("reduce-overhead", True), ("max-autotune", True), ("default", False)):
        with applied(pipes["tiny"], [Compile(CompileParams(mode, True, ["unet"]), gpu)]):
            assert inductor.triton.cudagraph_or_error is captured
            if captured:
                with pytest.raises(RuntimeError, match="skipping cudagraphs due to cpu device"):
                    log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to cpu device (arg0_1)")
        assert inductor.triton.cudagraph_or_error is False
    log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to cpu device (arg0_1)")  # a warning again


def test_a_compiled_sdxl_vae_in_fp16_is_upcast_to_the_same_weights_at_every_decode():
    """SDXL's pipeline casts an fp16 VAE to fp32 before every decode and back after: new fp32 tensors at
    every call, which the CUDA graphs of a compiled decoder would record again. Held, the decoder reads the
    same fp32 tensors at every call (and after an eager side's calls in between), with the pipeline's own
    images, and leaving puts the VAE's own tensors back."""
    import os

    from accel_bench.accelerators.compile import Compile, CompileParams
    from accel_bench.accelerators.vae_upcast import CODE as UPCAST_CODE
    from accel_bench.accelerators.vae_upcast import HeldUpcast
    from accel_bench.pipelines import load_pipeline

    pipe, _, _ = load_pipeline(
        compose_run_config(["pipeline=tiny_xl"]).pipeline, "cpu", torch.float32, os.environ["ACCEL_BENCH_CACHE"]
    )
    pipe.vae.to(torch.float16)  # decoded in fp32 all the same: the pipeline upcasts it (force_upcast)
    vae, decoded = pipe.vae, []
    vae.decoder.register_forward_pre_hook(
        lambda m, a: decoded.append([(p.data_ptr(), p.dtype) for p in vae.parameters()])
    )

    eager = generate(pipe), generate(pipe)
    assert decoded[0] != decoded[1] and {d for _, d in decoded[0]} == {torch.float32}  # new fp32 tensors each call
    held = HeldUpcast()
    held.hold(pipe)
    assert np.array_equal(generate(pipe), eager[0]) and np.array_equal(generate(pipe), eager[1])
    assert decoded[2] == decoded[3] and {d for _, d in decoded[2]} == {torch.float32}
    held.release(pipe)
    generate(pipe)  # an eager side's call: new fp16 tensors of the same values, found again by value
    own = [p.data_ptr() for p in vae.parameters()]
    held.hold(pipe)
    generate(pipe)
    assert decoded[5] == decoded[2] and decoded[4] != decoded[2]
    held.release(pipe)
    assert [p.data_ptr() for p in vae.parameters()] == own and "upcast_vae" not in pipe.__dict__

    exec(
        "\n".join(line[4:] for line in UPCAST_CODE), {"pipe": pipe, "torch": torch, "COMPILE_TARGETS": ["vae_decoder"]}
    )
    assert np.array_equal(generate(pipe), eager[0]) and np.array_equal(generate(pipe), eager[1])  # a generated file's
    assert decoded[-1] == decoded[-2] and {d for _, d in decoded[-1]} == {torch.float32}
    del pipe.upcast_vae
    pipe.vae.to(torch.float16)

    target = Target(pipeline="tiny_xl", family="sdxl", down_blocks=len(pipe.unet.down_blocks), steps=4)
    for targets, family, holds in (
        (["vae_decoder"], "sdxl", True),
        (["unet"], "sdxl", False),  # an eager decoder: the pipeline's own upcast
        (["vae_decoder"], "sd", False),  # SD's pipelines decode in fp16 as they are
    ):
        method = Compile(CompileParams("default", True, targets), dataclasses.replace(target, family=family))
        method.apply(pipe, {})  # compiles lazily, at the first call
        assert ("upcast_vae" in pipe.__dict__) == holds
        method.remove(pipe)
        assert "upcast_vae" not in pipe.__dict__ and "_compiled_call_impl" not in vae.decoder.__dict__
        assert {p.dtype for p in vae.parameters()} == {torch.float16}
