"""The one timing path: batching, per-prompt generators, warm-up, re-seeding and the arithmetic."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from accel_bench import measure as measure_module
from accel_bench.config import compose_run_config
from accel_bench.measure import measure, prompt_generators, prompt_seed
from accel_bench.pipelines import set_scheduler
from accel_bench.record import Side

CPU = torch.device("cpu")


class RecordingGenerate:
    """A fake pipeline: records each call and draws one number from each prompt's generator."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, generators):
        draws = [float(torch.rand(1, generator=g)) for g in generators]
        self.calls.append((list(prompts), [g.initial_seed() for g in generators], draws))
        return np.zeros((len(prompts), 2, 2, 3), dtype=np.float32)


def test_batches_warmup_and_reseeding():
    fake = RecordingGenerate()
    seeds_before = []
    prompts = [f"p{i}" for i in range(5)]
    result = measure(
        fake,
        prompts,
        batch_size=2,
        seed=11,
        warmup_batches=2,
        device=CPU,
        before_batch=seeds_before.append,
        count_flops=False,
    )

    assert [c[0] for c in fake.calls] == [["p0", "p1"], ["p2", "p3"], ["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert result.warmup_batches == 2 and result.batch_sizes == [2, 2, 1] and result.num_images == 5
    # each prompt's generator depends on (seed, index) only, and is made anew after warm-up
    warmup_first, measured_first = fake.calls[0], fake.calls[2]
    assert warmup_first[1] == measured_first[1] == [prompt_seed(11, 0), prompt_seed(11, 1)]
    assert warmup_first[2] == measured_first[2]
    assert fake.calls[4][1] == [prompt_seed(11, 4)]
    # stateful accelerators are reset before every call, with a seed fixed by the batch's first prompt
    assert seeds_before == [
        prompt_seed(11, 0),
        prompt_seed(11, 2),
        prompt_seed(11, 0),
        prompt_seed(11, 2),
        prompt_seed(11, 4),
    ]
    assert result.images.shape == (5, 2, 2, 3)
    assert result.peak_mem_gb is None  # CPU


def test_warmup_is_capped_by_the_number_of_batches():
    fake = RecordingGenerate()
    result = measure(fake, ["a", "b"], batch_size=4, seed=0, warmup_batches=3, device=CPU, count_flops=False)
    assert result.warmup_batches == 1 and len(fake.calls) == 2


def test_timing_arithmetic_names_its_denominators(monkeypatch):
    # perf_counter is read twice per batch: one warm-up batch of 5 s, then batches of 1 s, 2 s, 3 s
    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 22.0, 30.0, 33.0])
    monkeypatch.setattr(measure_module, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    result = measure(
        RecordingGenerate(), list("abcde"), batch_size=2, seed=0, warmup_batches=1, device=CPU, count_flops=False
    )
    assert result.warmup_times_s == [5.0]
    assert result.batch_times_s == [1.0, 2.0, 3.0]
    assert result.latency_s == pytest.approx(6.0 / 5)  # seconds per image: total / images
    assert Side.of(result, compiled=False).images_per_s == pytest.approx(5 / 6.0)  # as the row keeps it
    assert (result.batch_time_median_s, result.batch_time_min_s, result.batch_time_max_s) == (2.0, 1.0, 3.0)


def test_prompt_seeds_are_distinct_and_stable():
    assert prompt_seed(0, 1) != prompt_seed(1, 0)
    assert len({prompt_seed(s, i) for s in range(5) for i in range(50)}) == 250
    assert [g.initial_seed() for g in prompt_generators(3, 2, 2)] == [prompt_seed(3, 2), prompt_seed(3, 3)]


@pytest.mark.parametrize("pipeline", ["tiny", "tiny_xl"])
def test_images_do_not_depend_on_batch_size(pipes, pipeline):
    pipe = pipes[pipeline]
    set_scheduler(pipe, compose_run_config(["scheduler=dpmsolver"]).scheduler)

    def generate(prompts, generators):
        return pipe(prompt=prompts, generator=generators, num_inference_steps=4, output_type="np").images

    prompts = ["a cat", "a dog on a skateboard", "a red car"]
    images = [
        measure(generate, prompts, batch_size=b, seed=5, warmup_batches=0, device=CPU, count_flops=False).images
        for b in (1, 2, 3)
    ]
    for other in images[1:]:
        np.testing.assert_allclose(other, images[0], atol=1e-5)  # float rounding of batched kernels only
    assert not np.allclose(images[0][0], images[0][1], atol=1e-3)  # and the prompts do give different images


def test_flop_count_keeps_a_shape_formulas_result_per_operation_shapes_and_arguments():
    """A kept result is what the formula gives: the same operation on other shapes or with another
    argument (a convolution's stride) is counted anew, and a formula that reads values is never kept."""
    from torch.nn.functional import conv2d
    from torch.utils.flop_counter import FlopCounterMode

    x, w, a, b, c = (torch.randn(*s) for s in [(1, 3, 16, 16), (8, 3, 3, 3), (4, 5), (5, 6), (5, 2)])

    def work():
        for _ in range(3):
            conv2d(x, w), conv2d(x, w, stride=2), conv2d(x[:, :, :8], w), a @ b, a @ c

    reference, lean = FlopCounterMode(display=False), measure_module.FlopCount()
    with reference:
        work()
    with lean:
        work()
    assert lean.total == reference.get_total_flops() > 0
    assert len(lean.known) == 5  # three convolutions and two products, each evaluated once and used three times
    calls = []

    def by_value(*args, out_val=None, **kwargs):
        calls.append(args)
        return 7

    assert [lean._flops(torch.ops.aten.mm.default, by_value, (a, b), {}, a @ b) for _ in range(2)] == [7, 7]
    assert len(calls) == 2


def test_flops_are_counted_per_image(tiny_pipe):
    set_scheduler(tiny_pipe, compose_run_config(["scheduler=ddim"]).scheduler)

    def generate(prompts, generators):
        return tiny_pipe(prompt=prompts, generator=generators, num_inference_steps=2, output_type="np").images

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        generate(["a", "b", "c"], prompt_generators(0, 0, 3))
    per_image_in_a_batch = counter.get_total_flops() / 3 / 1e9
    counted = measure(generate, ["a", "b", "c"], batch_size=3, seed=0, warmup_batches=0, device=CPU).flops_per_image
    assert counted > 0
    assert counted == pytest.approx(per_image_in_a_batch, rel=1e-6)  # counted on one image, the same per image
    # with a warm-up batch to run anyway, that batch is the counted call: no extra call, the same count
    calls = []

    def recorded(prompts, generators):
        calls.append(len(prompts))
        return generate(prompts, generators)

    warm = measure(recorded, ["a", "b", "c"], batch_size=3, seed=0, warmup_batches=1, device=CPU)
    assert calls == [3, 3] and warm.warmup_times_s == [] and warm.warmup_batches == 1 and warm.flops_s > 0
    assert warm.flops_per_image == pytest.approx(per_image_in_a_batch, rel=1e-6)


def test_an_inherited_warm_up_is_one_batch_and_says_so(monkeypatch):
    """A process already warm runs one warm-up batch whatever ``auto`` would have run, and the
    measurement records it; a cold auto warm-up runs until two batches agree."""
    from contextlib import contextmanager

    from accel_bench.measure import WarmupPolicy, measure_sides

    clock = {"now": 0.0}
    monkeypatch.setattr(measure_module.time, "perf_counter", lambda: clock["now"])

    def generate(prompts, generators):
        clock["now"] += next(clock["batch_s"])
        return np.zeros((len(prompts), 2, 2, 3), dtype=np.float32)

    @contextmanager
    def opened():
        yield generate, None

    def run(policy, count_flops):
        clock["batch_s"] = iter([3.0, 2.0, 1.5, 1.0, 1.0] + [1.0] * 20)
        (measured,) = measure_sides(
            [opened], ["a", "b"], batch_size=2, seed=0, warmup=policy, device=CPU, count_flops=count_flops
        )
        return measured

    cold = run(WarmupPolicy("auto", 0.02, 10), count_flops=False)
    assert cold.warmup_times_s == [3.0, 2.0, 1.5, 1.0, 1.0] and cold.warmup_stable and not cold.warmup_inherited
    # the FLOPs-counting batch is the first warm-up batch; its time is never one that must agree
    counted = run(WarmupPolicy("auto", 0.02, 10), count_flops=True)
    assert counted.flops_s == 3.0 and counted.warmup_times_s == [2.0, 1.5, 1.0, 1.0]
    warm = run(WarmupPolicy("auto", 0.02, 10, inherited=True), count_flops=False)
    assert warm.warmup_times_s == [3.0] and warm.warmup_inherited and warm.warmup_stable is None
    warm_counted = run(WarmupPolicy("auto", 0.02, 10, inherited=True), count_flops=True)
    assert warm_counted.flops_s == 3.0 and warm_counted.warmup_times_s == [] and warm_counted.batch_times_s == [2.0]
    assert warm_counted.warmup_batches == 1  # the counting batch was its one warm-up batch
