"""The fewer-steps bar's arithmetic: which step counts are tried and chosen, pooled fidelity, the judgement."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from pytest import approx

from accel_bench.evaluate.bar import (
    FEWER_STEPS,
    Reference,
    chosen_steps,
    fitted_steps,
    judge,
    measured_reference,
    pooled_psnr,
    probe_steps,
)
from accel_bench.evaluate.codefile import settable_steps
from accel_bench.evaluate.protocol import Exchange, Failure


def test_the_probe_is_never_faster_than_the_file_and_always_a_cut():
    assert probe_steps(20, 2.0) == 10 and probe_steps(20, 1.9) == 11 and probe_steps(20, 2.1) == 10
    assert probe_steps(20, 0.8) == 19 and probe_steps(20, 50.0) == 1


def test_the_fit_finds_the_count_of_a_linear_latency():
    fixed, per_step, steps = 0.27, 0.0365, 20  # a pipeline whose text encoder and VAE cost 27% of a 20-step call

    def speedup(count):
        return (fixed + per_step * steps) / (fixed + per_step * count)

    probe = probe_steps(steps, speedup(6))
    assert probe == 10  # 20 / 2.04x: a cut that ignores the fixed cost is slower than the file
    assert fitted_steps(steps, speedup(6), probe, speedup(probe)) == 6
    assert fitted_steps(steps, speedup(6) * 0.99, probe, speedup(probe)) == 7  # never below the file's speed
    assert fitted_steps(steps, 3.0, 12, 0.95) == 12  # a probe no faster than the baseline: the probe stands


def test_a_fitted_count_measured_faster_than_the_file_is_not_chosen():
    measured = {5: Reference(5, 2.4), 6: Reference(6, 2.1), 7: Reference(7, 1.8)}
    assert chosen_steps(measured, [5, 6, 7], 2.2) == 6
    assert chosen_steps(measured, [5, 6, 7], 1.5) == 7  # none as slow as the file: the probe
    assert chosen_steps({**measured, 6: Reference(6, failure="crashed")}, [5, 6, 7], 2.2) == 7
    # 5 steps measured slower than 6 (noise: a run-queue on 2 cores): not trusted below a count too fast
    assert chosen_steps({**measured, 5: Reference(5, 2.0), 6: Reference(6, 2.3)}, [5, 6, 7], 2.2) == 7


def _exchange(prompts, seeds, images):
    return Exchange(list(prompts), list(seeds), np.asarray(images, dtype=np.uint8))


def test_pooled_fidelity_is_not_fooled_by_a_batch_partly_copied():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (4, 8, 8, 3))
    honest = np.clip(base + rng.integers(-3, 4, base.shape), 0, 255)
    copied = honest.copy()
    copied[2:] = np.roll(honest[:1], 1, axis=2)  # two of four images are another's, shifted
    baseline = [_exchange("abcd", range(4), base)]
    good, keys = pooled_psnr([_exchange("abcd", range(4), honest)], baseline)
    bad, _ = pooled_psnr([_exchange("abcd", range(4), copied)], baseline)
    median_of_copied = np.median(
        [10 * np.log10(255.0**2 / np.mean((c.astype(float) - b) ** 2)) for c, b in zip(copied, base)]
    )
    assert len(keys) == 4 and good > 35 and bad < 15 and median_of_copied > bad + 10
    only, covered = pooled_psnr([_exchange("abcd", range(4), copied)], baseline, keys={("a", 0), ("b", 1)})
    assert covered == {("a", 0), ("b", 1)} and abs(only - good) < 3


def test_judged_against_the_reference_on_the_inputs_both_saw():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (2, 8, 8, 3))
    baseline = [_exchange("ab", [0, 1], base)]
    near = [_exchange("ab", [0, 1], np.clip(base + 1, 0, 255))]
    far = [_exchange("ab", [0, 1], np.clip(base + 8, 0, 255))]
    bar = judge(near, baseline, Reference(10, 1.9, far), margin_db=1.0, min_psnr_db=25)
    assert bar.kind == FEWER_STEPS and bar.cleared and bar.reference_steps == 10 and bar.images == 2
    assert bar.required_psnr_db == bar.reference_psnr_db + 1.0
    same = judge(far, baseline, Reference(10, 1.9, far), margin_db=1.0, min_psnr_db=25)
    assert not same.cleared and "10 steps" in same.explain()
    assert judge(near, baseline, Reference(10, 1.0, baseline), 1.0, 25).note.endswith("ignores its step count")
    assert judge(near, baseline, Reference(10, failure="crashed: x"), 1.0, 25).kind == "floor"


def test_a_file_whose_inference_hard_codes_its_steps_cannot_be_cut(tmp_path: Path):
    cases = {
        "generated.py": "NUM_INFERENCE_STEPS = 20\ndef inference(pipe, prompts, generator):\n    return pipe(num_inference_steps=NUM_INFERENCE_STEPS)\n",
        "no_inference.py": "pipe = None\n",
        "literal.py": "def inference(pipe, prompts, generator):\n    return pipe(num_inference_steps=20)\n",
    }
    for name, source in cases.items():
        (tmp_path / name).write_text(source)
    assert {name: settable_steps(tmp_path / name) for name in cases} == {
        "generated.py": True,
        "no_inference.py": True,
        "literal.py": False,
    }


def _side(label, latencies, checks, steps=6):
    from accel_bench.evaluate.session import SideResult, SideSpec

    result = SideResult(SideSpec(label, Path(f"{label}.py"), steps))
    result.pass_latencies_s, result.checks, result.passes_asked = latencies, checks, 2
    return result


def test_a_cut_measured_while_disturbed_or_slower_than_the_baseline_is_in_doubt():
    from accel_bench.watch.checks import PassCheck

    quiet, busy = PassCheck(), PassCheck(wait_shares=[0.9])
    base = _side("baseline", [1.0, 1.0, 1.0], [quiet] * 3)
    steady = measured_reference(4, base, _side("fewer steps 4", [0.7, 0.7, 0.7], [quiet] * 3, 4))
    assert steady.doubt is None and abs(steady.speedup - 1 / 0.7) < 1e-9
    # one clean pair of the two asked: the busy passes chose nothing, but the count is in doubt
    disturbed = measured_reference(4, base, _side("fewer steps 4", [0.7, 0.5, 0.5], [quiet, busy, busy], 4))
    assert disturbed.speedup == 1 / 0.7 and "fewer steps 4: busy host" in disturbed.doubt
    assert "1 of 2 pass pairs clean" in disturbed.doubt
    # a cut saves steps: measured slower than the baseline, its speed is noise, though no watch fired
    noise = measured_reference(5, base, _side("fewer steps 5", [1.01, 1.01, 1.01], [quiet] * 3, 5))
    assert noise.speedup < 1 and "slower than the baseline's 6 steps" in noise.doubt


def test_a_bar_failed_in_doubt_says_so_and_the_record_is_disturbed():
    from accel_bench.evaluate.records import compare
    from accel_bench.watch.checks import PassCheck

    rng = np.random.default_rng(2)
    base_images = rng.integers(0, 256, (2, 8, 8, 3))
    far = np.clip(base_images + 8, 0, 255)
    baseline = [_exchange("ab", [0, 1], base_images)]
    near = np.clip(base_images + 1, 0, 255)
    cut = [_exchange("ab", [0, 1], near)]  # the cut is more faithful than the file: the file fails its bar
    in_doubt = Reference(5, 0.99, cut, doubt="fewer steps 5: noise")
    assert judge(baseline, baseline, in_doubt, 1.0, 25).doubt == "fewer steps 5: noise"
    both = judge([_exchange("ab", [0, 1], far)], baseline, in_doubt, 1.0, 25, doubt="this file's speed: busy")
    assert both.doubt == "this file's speed: busy; fewer steps 5: noise" and "(in doubt: " in both.explain()

    def side(label, latencies, checks, images):
        result = _side(label, latencies, checks)
        result.spec = type(result.spec)(label, result.spec.path, 6, (1.5,))
        result.measured = [_exchange("ab", [0, 1], images)]
        return result

    quiet, busy = PassCheck(), PassCheck(wait_shares=[0.9])
    base = side("baseline", [1.0] * 3, [quiet] * 3, base_images)
    for reference, checks, doubted in (
        (Reference(4, 1.9, cut), [quiet] * 3, False),
        (Reference(4, 1.9, cut, doubt="fewer steps 4: noise"), [quiet] * 3, True),
        (Reference(4, 1.9, cut), [quiet, busy, busy], True),  # the file's own speed, which chose the count
    ):
        record = compare(base, side("gt", [0.5] * 3, checks, far), [], 1.5, None, 20.0, reference=reference)
        assert "no_better_than_fewer_steps" in record.reasons
        assert ("disturbed" in record.reasons) == doubted == bool(record.bar.doubt), record
        assert record.passed is False


def test_the_count_is_chosen_against_the_files_speed_beside_the_cuts():
    """The red team's half-steps cheat once passed: its comparison measured it 2.08x, the cuts' own session
    measured every cut slower, and the 2-step cut (2.03x) became the reference of a file running 4 steps."""
    from accel_bench.evaluate.bar import Claim, reference_for
    from accel_bench.evaluate.session import SideSpec
    from accel_bench.watch.checks import PassCheck

    quiet, busy = PassCheck(), PassCheck(wait_shares=[0.9])
    base = _side("baseline", [1.0] * 3, [quiet] * 3, 8)
    cheat = Claim(SideSpec("candidate 7", Path("c.py"), 8, (1.05,)), low=2.07, median=2.08)
    cuts = {
        count: measured_reference(count, base, _side(f"fewer steps {count}", [1 / s] * 3, [quiet] * 3, count))
        for count, s in ((4, 1.82), (3, 1.98), (2, 2.03))
    }
    probe = Reference(4, 1.82)
    assert chosen_steps(cuts, [2, 3, 4], cheat.low) == 2  # against the comparison's speed alone: the 2-step cut
    beside = _side("candidate 7", [1 / 1.82] * 3, [quiet] * 3, 8)
    chosen = reference_for(cheat, probe, [2, 3, 4], cuts, base, beside)
    assert chosen.steps == 4 and chosen.file_speedup_beside == approx(1.82) and chosen.doubt is None
    # a file faster beside the cuts than in its comparison does not lower its bar: the low end still limits
    fast = reference_for(cheat, probe, [2, 3, 4], cuts, base, _side("candidate 7", [1 / 2.5] * 3, [quiet] * 3, 8))
    assert fast.steps == 2 and fast.file_speedup_beside == approx(2.5)
    slower = Claim(cheat.spec, low=2.0, median=2.01)
    assert reference_for(slower, probe, [2, 3, 4], cuts, base, _side("c", [1 / 2.5] * 3, [quiet] * 3, 8)).steps == 3
    # failed or disturbed beside the cuts: the most steps tried, or the count in doubt
    crashed = _side("candidate 7", [], [], 8)
    crashed.failure = Failure("crashed", "boom")
    failed = reference_for(cheat, probe, [2, 3, 4], cuts, base, crashed)
    assert failed.steps == 4 and failed.file_speedup_beside is None and "failed (crashed)" in failed.doubt
    noisy = reference_for(cheat, probe, [2, 3, 4], cuts, base, _side("candidate 7", [1 / 1.82] * 3, [busy] * 3, 8))
    assert noisy.steps == 4 and "beside the cuts measured while disturbed" in noisy.doubt
    # every cut failed beside the file: the probe as its own session measured it
    broken = {count: Reference(count, failure="crashed: x") for count in cuts}
    assert reference_for(cheat, probe, [2, 3, 4], broken, base, beside) == replace(
        probe, file_speedup_beside=approx(1.82)
    )
