"""The search sweeper (hydra/sweeper=search): candidates from the grid's own plan, screened where the
sampler expects the front, the best within each budget measured in full, resumable from the sweep dir."""

from __future__ import annotations

import json

import pytest

from accel_bench.record import read_rows
from accel_bench.sweep import search
from accel_bench.sweep.layout import SweepLayout

from .conftest import cpu_hogs, run_cli


def _candidates():
    jobs = {
        "deepcache": [["accel=deepcache", f"accel.cache_interval={i}", "steps=10"] for i in (2, 3, 4)],
        "tome": [["accel=tome", f"accel.ratio={r}", "steps=10"] for r in (0.3, 0.5)],
    }
    return search.candidates(jobs)


def test_candidates_keep_the_grid_plan_order_and_split_combination_from_setting():
    found = _candidates()
    assert [c.index for c in found] == list(range(5)) and [c.grid for c in found] == ["deepcache"] * 3 + ["tome"] * 2
    assert found[0].combination == ("-", "-", "10", "-")
    assert found[3].setting == (("accel", "tome"), ("accel.ratio", "0.3"))
    assert list(search.grouped(found)) == [("-", "-", "10", "-")]


def test_full_measurement_takes_the_fastest_screened_within_each_budget():
    found = _candidates()
    screened = {
        0: search.Result(1.5, 0.001),
        1: search.Result(2.0, 0.012),  # within 0.01 only with the slack
        2: search.Result(2.6, 0.04),
        3: search.Result(0.9, 0.0),  # slower than the baseline: never
        4: search.Result(1.7, 0.2),
    }
    chosen = search.to_measure_fully(found, screened, [0.01, 0.05], per_budget=1, slack=0.5)
    assert [c.index for c in chosen] == [1, 2]
    assert [c.index for c in search.to_measure_fully(found, screened, [0.01], 2, 0.0)] == [0]
    # budgets whose fastest candidates coincide measure the next ones too
    assert [c.index for c in search.to_measure_fully(found, screened, [0.05, 0.1], 1, 0.0)] == [1, 2]
    # a screen measured while disturbed cannot rank its candidate: within the widest budget it is measured
    # in full however it screened (3: below 1x; 4: outside every budget even with the slack; 9: not screened)
    unsure = search.to_measure_fully(found, screened, [0.01, 0.05], 1, 0.5, unsure={0, 3, 4, 9})
    assert [c.index for c in unsure] == [0, 1, 2, 3]
    assert search.front(screened, [0.005, 0.05, 0.5]) == [(0.005, 0), (0.05, 2), (0.5, 2)]
    assert search.front({3: screened[3]}, [0.1]) == [(0.1, None)]
    # a full row measured while disturbed is passed over where an undisturbed one is within the budget
    full = {**screened, 2: search.Result(2.6, 0.04, disturbed=True)}
    assert search.front(full, [0.005, 0.05, 0.5]) == [(0.005, 0), (0.05, 1), (0.5, 1)]
    assert search.front({2: full[2]}, [0.05]) == [(0.05, 2)]  # the only one within: shown (and marked)


def test_refinement_screens_the_unscreened_neighbours_of_each_grids_fastest_candidates(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    jobs = {
        "deepcache": [
            ["accel=deepcache", f"accel.cache_interval={i}", f"accel.cache_branch_id={b}"]
            for i in (2, 3, 4)
            for b in (0, 1)
        ],
        "tome": [["accel=tome", f"accel.ratio={r}"] for r in (0.3, 0.5, 0.7)],
    }
    found = search.candidates(jobs)
    at = {(dict(c.setting).get("accel.cache_interval"), dict(c.setting).get("accel.cache_branch_id")): c for c in found}
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "s.log")))
    study = search.Study("s", found, storage, seed=0, budgets=[0.05], slack=0.0)
    assert sorted(c.index for c in study.neighbours(at[("3", "1")])) == sorted(
        at[k].index for k in (("2", "1"), ("4", "1"), ("3", "0"))
    )
    tome_05 = next(c for c in found if ("accel.ratio", "0.5") in c.setting)
    screened = {at[("3", "1")]: search.Result(2.0, 0.01), tome_05: search.Result(3.0, 0.2)}  # ToMe: over budget
    for candidate, result in screened.items():
        study.study.tell(study._trial_for(candidate), [result.speedup, result.loss])
    done = {c.index for c in screened}
    chosen = study.refinements(5, done)
    assert sorted(c.index for c in chosen) == sorted(at[k].index for k in (("2", "1"), ("4", "1"), ("3", "0")))
    assert len(study.refinements(2, done)) == 2
    # asked for more, half of a round goes to the front's neighbours, the rest to the sampler
    asked = [c for _, c in study.ask(4)]
    assert len({c.index for c in asked}) == 4 and not done & {c.index for c in asked}
    assert {c.index for c in asked[:2]} <= {c.index for c in chosen}


def test_every_methods_speed_directions_name_its_own_parameters():
    import dataclasses

    from accel_bench.accelerators import METHODS, speed_directions

    for cls in METHODS.values():
        assert set(cls.faster) <= {f.name for f in dataclasses.fields(cls.Params)}, cls.name
        assert set(cls.faster.values()) <= {1, -1}, cls.name
    assert speed_directions()["accel.cache_interval"] == 1 and speed_directions()["accel.cache_branch_id"] == -1


def test_the_methods_design_steers_the_search_corner_first_and_prunes_what_it_dominates(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from accel_bench.accelerators import speed_directions

    jobs = {
        "deepcache": [
            ["accel=deepcache", f"accel.cache_interval={i}", f"accel.cache_branch_id={b}"]
            for i in (2, 3, 4)
            for b in (0, 1, 2)
        ],
        "tome": [["accel=tome", f"accel.ratio={r}"] for r in (0.3, 0.5, 0.7)],
    }
    found = search.candidates(jobs)
    dc = {(dict(c.setting)["accel.cache_interval"], dict(c.setting)["accel.cache_branch_id"]): c for c in found[:9]}
    tome = {dict(c.setting)["accel.ratio"]: c for c in found[9:]}
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "s.log")))
    study = search.Study("s", found, storage, seed=0, budgets=[0.05, 0.1], slack=0.0, directions=speed_directions())
    assert study.corners() == [dc[("4", "0")], tome["0.7"]]
    faster_first = study.neighbours(dc[("3", "1")])
    assert set(faster_first[:2]) == {dc[("4", "1")], dc[("3", "0")]}
    assert set(faster_first[2:]) == {dc[("2", "1")], dc[("3", "2")]}

    (first, corner_dc), (second, corner_tome) = study.ask(2)
    assert (corner_dc, corner_tome) == (dc[("4", "0")], tome["0.7"])
    study.tell(first, search.Result(2.0, 0.01))  # inside the tightest budget: it dominates its grid
    study.tell(second, search.Result(1.3, 0.3))  # over every budget: dominates nothing
    screened = study.screened()
    assert study.slower_by_design(dc[("2", "2")], screened) and not study.slower_by_design(tome["0.3"], screened)
    asked = []
    while True:
        more = study.ask(3)
        if not more:
            break
        for number, candidate in more:
            asked.append(candidate)
            study.tell(number, search.Result(1.1, 0.001))
    assert set(tome.values()) <= {corner_tome, *asked}  # nothing dominates ToMe's candidates: all screened

    def steps_from_corner(c):
        setting = dict(c.setting)
        return sum(study.ranks["deepcache"][k][setting[k]] for k in study.ranks["deepcache"])

    # what the corner dominates is screened only near the front (refinements check the design there)
    assert all(steps_from_corner(c) <= 2 for c in asked if c.grid == "deepcache")
    pruned = {found[i] for i in study.pruned()}
    assert pruned and all(c.grid == "deepcache" and study.dominates(corner_dc, c) for c in pruned)
    assert pruned | set(asked) | {corner_dc, corner_tome} == set(found)


def test_the_sampler_never_picks_a_candidate_twice_and_repeats_itself_with_the_same_seed(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    found = _candidates()
    picks = []
    for run in ("a", "b"):
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / f"{run}.log")))
        study = search.Study("s", found, storage, seed=3)
        chosen = [c.index for _, c in study.ask(3)]
        assert len(set(chosen)) == 3
        for number, index in zip(sorted(study.running()), chosen):
            study.tell(number, search.Result(1.0 + index, 0.01 * index))
        chosen += [c.index for _, c in study.ask(5)]  # only two are left
        assert sorted(chosen) == [0, 1, 2, 3, 4] and not study.ask(1)
        picks.append(chosen)
    assert picks[0] == picks[1]


def test_search_screens_a_share_measures_the_best_in_full_and_resumes_without_rerunning(tmp_path):
    sweep = tmp_path / "search"
    args = [
        "-m",
        "+sweep=deepcache",  # 5 intervals x 12 branches: the grid sweeper's space, unchanged
        "hydra/sweeper=search",
        "steps=4",
        "batch_size=2",
        "num_prompts=3",
        "warmup_batches=1",
        "hydra.sweeper.round_size=3",
        "hydra.sweeper.screen_share=0.1",
        "hydra.sweeper.full_per_budget=1",
        "hydra.sweeper.budgets=[0.5]",
        f"hydra.sweep.dir={sweep}",
        f"summary_path={tmp_path / 'all.csv'}",
    ]
    first = run_cli(args, tmp_path, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = read_rows(SweepLayout(sweep).summary)
    stages = [r.search_stage for r in rows]
    # at most 10% of 60 screened, the grid's fastest corner by design first; what it dominates is pruned
    assert 3 <= stages.count("screen") <= 6, stages
    corner = rows[0]
    assert corner.search_stage == "screen" and corner.accel_params == {"cache_interval": 6, "cache_branch_id": 0}
    done = first.stdout.split("[search] done: ")[1]
    pruned = int(done.split(" candidates pruned as slower by design")[0].rsplit(" ", 1)[1])
    assert corner.clip_loss <= 0.5 and pruned >= 1, first.stdout
    screened = [r for r in rows if r.search_stage == "screen"]
    # the corner dominates the grid: after the first round only neighbours of the measured leaders run;
    # where the corner also measured fastest, that is its own neighbours and every other candidate is pruned
    settings = [(r.accel_params["cache_interval"], r.accel_params["cache_branch_id"]) for r in screened]
    for i, b in settings[3:]:
        assert any(abs(i - i2) + abs(b - b2) == 1 for i2, b2 in settings if (i2, b2) != (i, b)), settings
    if corner.speedup >= max(r.speedup for r in screened if r.status == "ok"):
        assert pruned == 60 - len(screened), first.stdout
    assert all(r.num_images == 2 and r.repeats == 1 for r in screened if r.status == "ok")
    # measured in full with the run's own prompts (how fast it measures there is this CPU's to say: a
    # single-batch screen ranks close candidates loosely, and 2 cores under a suite are no timer): the
    # screen's fastest within the budget, and any screen within it that was disturbed
    best = max((r for r in screened if r.status == "ok" and r.speedup > 1), key=lambda r: r.speedup)
    unsure = [r for r in screened if r.status == "ok" and r.disturbed and r.clip_loss <= 0.75 and r is not best]
    fulls = [r for r in rows if r.search_stage == "full"]
    assert sorted(str(r.accel_params) for r in fulls) == sorted(str(r.accel_params) for r in [best, *unsure])
    assert all(r.status == "ok" and r.num_images == 3 and r.repeats >= 1 for r in fulls), fulls
    assert "[search] round 1: " in first.stdout and "the grid: 60 jobs, about " in first.stdout
    ledger = json.loads(SweepLayout(sweep).search_ledger.read_text())
    assert sorted(e["stage"] for e in ledger["jobs"].values()) == ["full"] * len(fulls) + ["screen"] * len(screened)

    from accel_bench.postprocess.records import read_summaries
    from accel_bench.postprocess.select import left_out, select

    measured, _ = read_summaries([sweep])
    (entry,) = select(measured, [0.5], include_random=True)
    assert entry.run_id in {r.run_id for r in fulls}  # post-process selects among full rows only
    assert any("screened by a search" in reason for reason in left_out(measured, True, True))

    again = run_cli(args, tmp_path, timeout=900)  # resumed: every trial finished, nothing runs again
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(read_rows(SweepLayout(sweep).summary)) == len(rows)
    assert json.loads(SweepLayout(sweep).search_ledger.read_text()) == ledger
    assert "[sweep] 0 jobs" in again.stdout

    # the grid into the search's folder would run its job 0, 1, ... where the search's jobs hold results
    plan = SweepLayout(sweep).plan.read_bytes()
    grid = run_cli([a for a in args if not a.startswith(("hydra/sweeper=", "hydra.sweeper."))], tmp_path)
    assert grid.returncode == 2 and "Traceback" not in grid.stderr, grid.stderr[-3000:]
    held = ", ".join(str(n) for n in range(len(rows)))
    assert (
        grid.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: hydra.sweep.dir='{sweep}' is not allowed: a folder of this sweep's own: job(s) {held} there"
        )
    )
    assert SweepLayout(sweep).plan.read_bytes() == plan and len(read_rows(SweepLayout(sweep).summary)) == len(rows)


def test_a_screen_measured_while_disturbed_is_measured_in_full_within_a_budget(tmp_path):
    """Beside CPU-bound processes every screen says it was disturbed: its speed ranks nothing, so each
    screened candidate within the budget (with the slack) is measured in full, not only the fastest."""
    sweep = tmp_path / "search"
    args = [
        "-m",
        "+sweep=deepcache",
        "hydra/sweeper=search",
        "steps=4",
        "batch_size=2",
        "num_prompts=2",
        "warmup_batches=1",
        "max_repeats=1",  # a disturbed pass is not measured again: here every one is
        "hydra.sweeper.round_size=2",
        "hydra.sweeper.screen_share=0.02",  # 2 of 60 (at least 2), in one round
        "hydra.sweeper.full_per_budget=1",
        "hydra.sweeper.budgets=[0.5]",
        f"hydra.sweep.dir={sweep}",
        f"summary_path={tmp_path / 'all.csv'}",
    ]
    with cpu_hogs():
        result = run_cli(args, tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_rows(SweepLayout(sweep).summary)
    screened = [r for r in rows if r.search_stage == "screen" and r.status == "ok"]
    unsure = [r for r in screened if r.disturbed and r.clip_loss <= 0.5 * 1.5]
    assert unsure and all("busy host" in r.disturbed for r in unsure), [r.disturbed for r in screened]
    assert f"[search] {sum(bool(r.disturbed) for r in screened)} screen(s) measured while disturbed" in result.stdout
    fastest = max((r for r in screened if r.speedup > 1 and r.clip_loss <= 0.75), key=lambda r: r.speedup, default=None)
    wanted = {str(r.accel_params) for r in unsure} | ({str(fastest.accel_params)} if fastest else set())
    assert sorted(str(r.accel_params) for r in rows if r.search_stage == "full") == sorted(wanted)
    if all(r.disturbed for r in screened):  # the progress line's front marks a screened speed it cannot trust
        assert "(screened) | 0.5: " in result.stdout and "x (disturbed) deepcache" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "override, key",
    [
        ("hydra.sweeper.budget_metric=psnr", "hydra.sweeper.budget_metric"),
        ("hydra.sweeper.screen_share=0", "hydra.sweeper.screen_share"),
        ("hydra.sweeper.budgets=[0.1,1.5]", "hydra.sweeper.budgets"),
        ("hydra.sweeper.round_size=0", "hydra.sweeper.round_size"),
        # a screen value every screening job would fail on: a key a run does not have, a value it cannot run with
        ("+hydra.sweeper.screen.num_promts=2", "hydra.sweeper.screen.num_promts"),
        ("hydra.sweeper.screen.repeats=0", "hydra.sweeper.screen.repeats"),
    ],
)
def test_search_bad_input_is_one_line_exit_2(tmp_path, override, key):
    result = run_cli(
        ["-m", "hydra/sweeper=search", "+sweep=tome", override, "hydra.sweep.dir=s"], tmp_path, timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}=") and "Traceback" not in result.stdout
    assert not (tmp_path / "s" / "summary.csv").exists()  # nothing ran
