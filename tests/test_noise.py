"""Numbers that hold on a noisy GPU: warm-up until stable, repeats with spread, interleaved A/B,
and winners confirmed (and re-ranked) before search_params.json is written."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from accel_bench import baselines, experiment
from accel_bench import measure as measure_module
from accel_bench.config import compose_run_config, resolve_repeats, warmup_policy
from accel_bench.measure import Measurement, WarmupPolicy, measure, measure_sides, speedup_ratios
from accel_bench.postprocess.select import Confirmation, select, select_confirmed
from accel_bench.record import Side

from .conftest import FAST
from .test_postprocess import measured_of, row

CPU = torch.device("cpu")


def fake_generate(prompts, generators):
    return np.zeros((len(prompts), 2, 2, 3), dtype=np.float32)


def scripted_clock(monkeypatch, durations):
    """perf_counter is read before and after every timed batch: each batch takes the next duration."""
    readings = []
    now = 0.0
    for seconds in durations:
        readings += [now, now + seconds]
        now += seconds + 1.0
    clock = iter(readings)
    monkeypatch.setattr(measure_module, "time", SimpleNamespace(perf_counter=lambda: next(clock)))


def test_auto_warmup_stops_once_two_batches_agree(monkeypatch):
    # warm-up: 5.0, 3.0, 2.00, 2.03 (within 2% of 2.00: stop); then the 2 measured batches
    scripted_clock(monkeypatch, [5.0, 3.0, 2.0, 2.03, 1.0, 1.0])
    result = measure(
        fake_generate, list("abcd"), batch_size=2, seed=0, warmup_batches="auto", device=CPU, count_flops=False
    )
    assert result.warmup_times_s == pytest.approx([5.0, 3.0, 2.0, 2.03]) and result.warmup_batches == 4
    assert result.batch_times_s == [1.0, 1.0]


def test_auto_warmup_stops_at_its_bound_when_never_stable(monkeypatch):
    scripted_clock(monkeypatch, [8.0, 7.0, 6.0, 5.0, 4.0, 1.0, 1.0])
    result = measure(
        fake_generate,
        list("abcd"),
        batch_size=2,
        seed=0,
        warmup_batches="auto",
        warmup_max_batches=5,
        device=CPU,
        count_flops=False,
    )
    assert result.warmup_batches == 5


def test_auto_warmup_compares_full_batches_and_warms_the_short_last_batch_once(monkeypatch):
    calls = []

    def generate(prompts, generators):
        calls.append(len(prompts))
        return fake_generate(prompts, generators)

    # full batches steady at 2.00, 2.03; the short batch (compiling its shape: 9 s); the full batch
    # slower once (what it runs changed), then steady again at 2.50, 2.52; the pass's three batches
    scripted_clock(monkeypatch, [5.0, 2.0, 2.03, 9.0, 3.0, 2.5, 2.52, 1.0, 1.0, 0.5])
    result = measure(
        generate, list("abcde"), batch_size=2, seed=0, warmup_batches="auto", device=CPU, count_flops=False
    )
    assert calls == [2, 2, 2, 1, 2, 2, 2] + [2, 2, 1]  # the short batch warmed once, never compared
    assert result.warmup_times_s == pytest.approx([5.0, 2.0, 2.03, 9.0, 3.0, 2.5, 2.52]) and result.warmup_stable
    assert result.batch_times_s == [1.0, 1.0, 0.5]

    calls.clear()  # no short batch: steady is enough
    scripted_clock(monkeypatch, [5.0, 2.0, 2.03, 1.0, 1.0])
    measure(generate, list("abcd"), batch_size=2, seed=0, warmup_batches="auto", device=CPU, count_flops=False)
    assert calls == [2, 2, 2, 2, 2]
    calls.clear()  # a fixed count is the pass's first batches, as asked
    scripted_clock(monkeypatch, [5.0, 1.0, 1.0, 0.5])
    measure(generate, list("abcde"), batch_size=2, seed=0, warmup_batches=1, device=CPU, count_flops=False)
    assert calls == [2, 2, 2, 1]


def test_repeats_give_median_and_spread(monkeypatch):
    # 3 repeats x 2 batches of 2 images: per-image latencies (1+1)/4, (2+2)/4, (1.5+1.5)/4
    scripted_clock(monkeypatch, [1.0, 1.0, 2.0, 2.0, 1.5, 1.5])
    result = measure(
        fake_generate, list("abcd"), batch_size=2, seed=0, warmup_batches=0, repeats=3, device=CPU, count_flops=False
    )
    assert result.repeat_latencies_s == [0.5, 1.0, 0.75]
    side = Side.of(result, compiled=False)  # as the row keeps it
    assert (result.latency_s, side.latency_s, side.latency_min_s, side.latency_max_s) == (0.75, 0.75, 0.5, 1.0)
    assert side.latency_spread == pytest.approx(0.5 / 0.75) and side.images_per_s == pytest.approx(1 / 0.75)
    assert result.measured_s == pytest.approx(9.0)  # every measured batch of every repeat
    assert result.num_images == 4 and result.images.shape == (4, 2, 2, 3)


def test_speedup_is_the_median_of_paired_ratios():
    def side(latencies):
        return Measurement(
            [x * 2 for x in latencies], [2] * len(latencies), len(latencies), [], None, None, np.zeros((2, 1, 1, 3))
        )

    base, accel = side([1.0, 1.2, 0.9]), side([0.5, 0.4, 0.45])
    ratios = speedup_ratios(base, accel)
    assert ratios == pytest.approx([2.0, 3.0, 2.0])
    assert sorted(ratios)[1] == pytest.approx(2.0)


def test_interleaved_passes_alternate():
    order = []

    def side(name):
        @contextmanager
        def opened():
            order.append(f"open {name}")

            def generate(prompts, generators):
                order.append(name)
                return fake_generate(prompts, generators)

            yield generate, None

        return opened

    sides = measure_sides(
        [side("A"), side("B")],
        list("abcd"),
        batch_size=4,
        seed=0,
        warmup=WarmupPolicy(1),
        device=CPU,
        repeats=2,
        interleave=True,
        count_flops=False,
    )
    # warm-up in the measured order, each side re-opened as its passes will be; then A B A B
    assert order == ["open A", "A", "open B", "B"] + ["open A", "A", "open B", "B"] * 2
    assert [s.repeats for s in sides] == [2, 2] and all(len(s.batch_times_s) == 2 for s in sides)


def test_auto_settings_follow_the_device():
    cfg = compose_run_config()
    assert (cfg.warmup_batches, cfg.repeats) == ("auto", "auto")
    assert warmup_policy(cfg, "cpu").batches == 1 and warmup_policy(cfg, "cuda:0").batches == "auto"
    assert (resolve_repeats("auto", "cpu"), resolve_repeats("auto", "cuda"), resolve_repeats(5, "cpu")) == (1, 3, 5)


def test_interleaved_run_says_it_remeasured_the_baseline(tmp_path, monkeypatch):
    monkeypatch.setattr(baselines, "_IN_PROCESS", {})
    cfg = compose_run_config(
        [*FAST, "repeats=2", "interleave=true", "count_flops=false", f"summary_path={tmp_path / 's.csv'}"]
    )
    row_ = experiment.run(cfg, tmp_path / "run")
    assert row_.status == "ok", row_.error
    assert (row_.interleaved, row_.baseline_cached, row_.repeats) == (True, False, 2)
    assert row_.speedup_min <= row_.speedup <= row_.speedup_max
    assert row_.accelerated.latency_min_s <= row_.accelerated.latency_s <= row_.accelerated.latency_max_s


def test_confirm_step_reranks_when_a_confirmed_speedup_drops(tmp_path):
    measured, _ = measured_of(
        tmp_path,
        [
            row(accel="deepcache", speedup=3.0, clip_loss=0.01),
            row(accel="tgate", speedup=2.5, clip_loss=0.01),
            row(accel="tome", speedup=2.0, clip_loss=0.01),
        ],
    )
    by_accel = {m.accel: m for m in measured}
    scripted = {"deepcache": 2.2, "tgate": 2.4, "tome": 9.9}
    asked = []

    def confirm(m):
        asked.append(m.accel)
        return Confirmation(scripted[m.accel], scripted[m.accel] - 0.1, scripted[m.accel] + 0.1, 0.01)

    (entry,), notes = select_confirmed(measured, [0.02], True, confirm)
    # deepcache confirmed 2.2 < tgate's swept 2.5: tgate confirmed 2.4 >= tome's swept 2.0, so stop
    assert asked == ["deepcache", "tgate"]
    assert (entry.accel, entry.confirmed_speedup, entry.reranked, entry.speedup) == (
        "tgate",
        2.4,
        True,
        by_accel["tgate"].speedup,
    )
    assert len(notes) == 1 and "re-ranked" in notes[0] and "confirmed 2.20x" in notes[0]

    scripted["deepcache"] = 2.8  # holds up: no re-ranking, one confirmation
    asked.clear()
    (entry,), notes = select_confirmed(measured, [0.02], True, confirm)
    assert asked == ["deepcache"] and (entry.accel, entry.reranked, notes) == ("deepcache", False, [])
    assert select(measured, [0.02], True)[0].confirmed_speedup is None


def test_a_confirmation_measured_while_disturbed_neither_confirms_nor_reranks(tmp_path):
    measured, _ = measured_of(
        tmp_path,
        [
            row(accel="deepcache", speedup=3.0, clip_loss=0.01),
            row(accel="tgate", speedup=2.5, clip_loss=0.01),
        ],
    )
    busy = "baseline: 2 batch(es) on a busy host (waited up to 80%)"
    scripted = {"deepcache": (1.4, busy), "tgate": (2.4, None)}
    asked = []

    def confirm(m):
        asked.append(m.accel)
        speedup, disturbed = scripted[m.accel]
        return Confirmation(speedup, speedup - 0.1, speedup + 0.1, 0.01, disturbed)

    (entry,), notes = select_confirmed(measured, [0.02], True, confirm)
    # undisturbed, 1.4x would have re-ranked to tgate; disturbed, the sweep's 3.0x stands
    assert asked == ["deepcache"] and (entry.accel, entry.reranked) == ("deepcache", False)
    assert (entry.confirmed_speedup, entry.confirmed_disturbed, entry.target_basis) == (1.4, busy, 3.0)
    assert len(notes) == 1 and "confirmation disturbed" in notes[0] and busy in notes[0] and "3.00x stands" in notes[0]
    from accel_bench.postprocess.report import _entries_table

    assert "1.40 (disturbed)" in _entries_table([entry], "CLIP loss") and "waited up to 80%" in _entries_table(
        [entry], ""
    )

    scripted["deepcache"] = (1.4, None)  # the same figure undisturbed: re-ranked, the target its confirmation
    (entry,), notes = select_confirmed(measured, [0.02], True, confirm)
    assert (entry.accel, entry.reranked, entry.confirmed_disturbed, entry.target_basis) == ("tgate", True, None, 2.4)
    assert "(disturbed)" not in _entries_table([entry], "CLIP loss")
    scripted["tgate"] = (2.4, busy)  # the runner-up's confirmation disturbed: its swept 2.5x against deepcache's 1.4x
    (entry,), notes = select_confirmed(measured, [0.02], True, confirm)
    assert (entry.accel, entry.target_basis) == ("tgate", 2.5) and any("2.50x stands" in n for n in notes)
