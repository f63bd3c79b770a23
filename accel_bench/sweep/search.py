"""The search: the grid's candidates, screened cheaply where a multi-objective sampler (Optuna) expects
the front, then the best screened candidates for each quality budget measured in full.

A candidate is one job of the grid sweeper's plan (the same ``conf/sweep/*.yaml`` grids). Candidates
are grouped by combination (pipeline, scheduler, steps, batch size); each combination is one Optuna
study with two objectives, speedup (up) and the budget metric's loss (down), whose parameters are the
grid (method) and that grid's swept keys. Studies live in an Optuna journal in the sweep folder, and
a ledger maps every launched job to its candidate and stage, so a search cut short resumes where it
stopped: finished trials are never run again, lost ones are launched again.

What the methods know about themselves steers it (``Accelerator.faster``: the direction in which each
parameter is faster by design): each grid's fastest corner is screened first, a screened candidate's
faster neighbours before its slower ones, and a candidate the sampler picks that is slower by design
in every parameter than one already screened inside the tightest budget is pruned, not run.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Optional, Sequence

from ..record import Row

COMBINATION_KEYS = ("pipeline", "scheduler", "steps", "batch_size")
SCREEN, FULL = "screen", "full"


@dataclass(frozen=True)
class Candidate:
    index: int  # its place in the grid's plan: deterministic, sorted by grid name
    grid: str
    overrides: tuple[str, ...]  # the grid job's overrides, as the grid sweeper would launch it
    combination: tuple[str, ...]  # its values of COMBINATION_KEYS ("-": the config's default)
    setting: tuple[tuple[str, str], ...]  # every other key and value: what the search chooses among


def split(overrides: Sequence[str]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(combination values, setting) of one job's overrides."""
    values = dict(line.split("=", 1) for line in overrides)
    combination = tuple(values.pop(key, "-") for key in COMBINATION_KEYS)
    return combination, tuple(sorted(values.items()))


def candidates(jobs_by_grid: dict[str, list[list[str]]]) -> list[Candidate]:
    """Every grid job as a candidate, grids in name order (the grid sweeper's job order)."""
    found = []
    for grid in sorted(jobs_by_grid):
        for overrides in jobs_by_grid[grid]:
            combination, setting = split(overrides)
            found.append(Candidate(len(found), grid, tuple(overrides), combination, setting))
    return found


def combination_name(combination: Sequence[str]) -> str:
    return " ".join(f"{k}={v}" for k, v in zip(COMBINATION_KEYS, combination))


@dataclass(frozen=True)
class Result:
    """What a finished job measured, as the search uses it."""

    speedup: float
    loss: float
    disturbed: bool = False  # its row says what disturbed its figures (post-process leaves it out by default)


def result_of(row: Optional[Row], budget_metric: str) -> Optional[Result]:
    """A row's speedup and budget-metric loss; None for a failed row or one without the metric."""
    if row is None or row.status != "ok" or row.speedup is None:
        return None
    from .. import metrics  # torch: not imported where Hydra scans its plugins

    loss = getattr(row, metrics.budget_column(budget_metric))
    return None if loss is None else Result(row.speedup, loss, bool(row.disturbed))


class Ledger:
    """``search/jobs.json``: job number -> candidate, stage and Optuna trial; written before each launch.
    It names its candidates' plan, so a sweep folder is never resumed with another search space."""

    def __init__(self, path: Path, found: Sequence[Candidate]):
        from ..errors import ConfigError

        self.path = path
        self.space = hashlib.sha1(json.dumps([list(c.overrides) for c in found]).encode()).hexdigest()[:16]
        stored = json.loads(path.read_text()) if path.exists() else {"space": self.space, "jobs": {}}
        if stored["space"] != self.space:
            raise ConfigError(
                "hydra.sweep.dir",
                str(path.parent.parent),
                "a new folder: this one holds a search over other candidates",
            )
        self.jobs: dict[int, dict[str, Any]] = {int(k): v for k, v in stored["jobs"].items()}

    def add(self, job: int, candidate: int, stage: str, trial: Optional[int]) -> None:
        self.jobs[job] = {"candidate": candidate, "stage": stage, "trial": trial}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        jobs = {str(k): v for k, v in sorted(self.jobs.items())}
        tmp.write_text(json.dumps({"space": self.space, "jobs": jobs}, indent=1) + "\n")
        tmp.replace(self.path)

    @property
    def next_job(self) -> int:
        return max(self.jobs, default=-1) + 1


class Study:
    """One combination's Optuna study: asks for candidates, is told what they measured."""

    def __init__(
        self,
        name: str,
        members: Sequence[Candidate],
        storage: Any,
        seed: int,
        startup: int = 10,
        budgets: Sequence[float] = (0.1,),
        slack: float = 0.5,
        directions: Optional[Mapping[str, int]] = None,
    ):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.members = list(members)
        self.by_setting = {(c.grid, c.setting): c for c in self.members}
        self.by_index = {c.index: c for c in self.members}
        self.grids = sorted({c.grid for c in self.members})
        self.values: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for c in self.members:
            for key, value in c.setting:
                if value not in self.values[c.grid][key]:
                    self.values[c.grid][key].append(value)
        self.varying = {grid: sorted(k for k, vs in keys.items() if len(vs) > 1) for grid, keys in self.values.items()}
        with warnings.catch_warnings():  # multivariate TPE, the sampler for conditional spaces, is "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=startup)
        self.study = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=["maximize", "minimize"],
            sampler=sampler,
            load_if_exists=True,
        )
        self.rng = random.Random(f"{seed}:{name}")
        self.loosest = max(budgets) * (1 + slack)  # a screened loss above this answers no budget
        self.tightest = min(budgets)
        self.ranks = {grid: self._speed_ranks(grid, directions or {}) for grid in self.grids}

    def _speed_ranks(self, grid: str, directions: Mapping[str, int]) -> dict[str, dict[str, int]]:
        """Per swept key with a known direction and numeric values: value -> rank, 0 the fastest."""
        ranks = {}
        for key in self.varying[grid]:
            try:
                numbers = {v: float(v) for v in self.values[grid][key]}
            except ValueError:
                continue
            if directions.get(key):
                fastest_first = sorted(numbers, key=lambda v: -directions[key] * numbers[v])
                ranks[key] = {v: rank for rank, v in enumerate(fastest_first)}
        return ranks

    def corners(self) -> list[Candidate]:
        """Each grid's fastest candidate by design (every ranked key at its fastest value), grids in order."""
        found = []
        for grid in self.grids:
            ranks = self.ranks[grid]
            fastest = [
                c
                for c in self.members
                if c.grid == grid and ranks and all(ranks[k][v] == 0 for k, v in c.setting if k in ranks)
            ]
            found += fastest[:1]
        return found

    def dominates(self, a: Candidate, b: Candidate) -> bool:
        """``a`` is at least as fast as ``b`` by design in every parameter (same grid, same unranked values)."""
        ranks = self.ranks[a.grid]
        if a.grid != b.grid or a == b or not ranks:
            return False
        mine, theirs = dict(a.setting), dict(b.setting)
        return all(
            ranks[k][mine[k]] <= ranks[k][theirs[k]] if k in ranks else mine[k] == theirs[k]
            for k in self.varying[a.grid]
        )

    def slower_by_design(self, candidate: Candidate, screened: dict[int, Result]) -> bool:
        """Dominated by a candidate screened inside the tightest budget: it cannot answer any budget
        better, unless the methods' design is wrong here (their neighbours are still screened)."""
        return any(r.loss <= self.tightest and self.dominates(self.by_index[i], candidate) for i, r in screened.items())

    def describe(self, candidate: Candidate) -> str:
        """The candidate by what its grid varies: ``deepcache accel.cache_interval=3 accel.cache_branch_id=0``."""
        setting = dict(candidate.setting)
        return " ".join([candidate.grid, *(f"{k}={setting[k]}" for k in self.varying[candidate.grid])])

    def screened(self) -> dict[int, Result]:
        """Candidate -> its screening result, from the study's finished trials."""
        import optuna

        found = {}
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            speedup, loss = trial.values
            found[trial.user_attrs["candidate"]] = Result(speedup, loss)
        return found

    def failed(self) -> set[int]:
        import optuna

        return {
            t.user_attrs["candidate"]
            for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
            if "candidate" in t.user_attrs
        }

    def pruned(self) -> set[int]:
        """Candidates the sampler picked that were slower by design than a screened one (no job ran)."""
        import optuna

        return {
            t.user_attrs["candidate"]
            for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
            if "candidate" in t.user_attrs
        }

    def running(self) -> dict[int, int]:
        """Trial number -> candidate, for trials launched but never told (their job was lost)."""
        import optuna

        return {
            t.number: t.user_attrs["candidate"]
            for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if "candidate" in t.user_attrs
        }

    def neighbours(self, candidate: Candidate) -> list[Candidate]:
        """The candidates of its grid one step away in one swept key (the key's values in plan order),
        those faster by design first."""
        setting = dict(candidate.setting)
        ranks = self.ranks[candidate.grid]
        found: list[Candidate] = []
        for key in self.varying[candidate.grid]:
            values = self.values[candidate.grid][key]
            at = values.index(setting[key])
            for step in (at - 1, at + 1):
                if 0 <= step < len(values):
                    moved = tuple(sorted({**setting, key: values[step]}.items()))
                    if (candidate.grid, moved) in self.by_setting:
                        found.append(self.by_setting[(candidate.grid, moved)])

        def slower(near: Candidate) -> int:
            moved = dict(near.setting)
            return next((int(ranks[k][moved[k]] > ranks[k][setting[k]]) for k in ranks if moved[k] != setting[k]), 1)

        return sorted(found, key=slower)

    def refinements(self, count: int, done: set[int]) -> list[Candidate]:
        """Up to ``count`` unscreened neighbours of each grid's fastest screened candidates that answer a
        budget: the methods' settings are ordered (a larger interval or ratio, a shallower branch), so the
        front's next point is most often one step from a point already on it. Every grid's best comes
        before any grid's second best: a grid the sampler has neglected still climbs toward its front.
        Around a grid's best every neighbour is screened (the methods' design checked where it decides);
        around its second best, only those that are not slower by design than a screened candidate."""
        screened = self.screened()
        by_index = self.by_index
        leaders = sorted(
            (i for i, r in screened.items() if r.loss <= self.loosest), key=lambda i: (-screened[i].speedup, i)
        )
        per_grid: dict[str, list[int]] = defaultdict(list)
        for i in leaders:
            if len(per_grid[by_index[i].grid]) < 2:
                per_grid[by_index[i].grid].append(i)
        ranked = [(rank, ids[rank]) for rank in range(2) for ids in per_grid.values() if rank < len(ids)]
        chosen: list[Candidate] = []
        for rank, i in ranked:
            for near in self.neighbours(by_index[i]):
                if near.index in done or near in chosen or len(chosen) >= count:
                    continue
                if rank == 0 or not self.slower_by_design(near, screened):
                    chosen.append(near)
        return chosen

    def _trial_for(self, candidate: Candidate) -> int:
        """A trial of the study fixed to ``candidate`` (the sampler learns from it like its own)."""
        grid = candidate.grid
        self.study.enqueue_trial({"grid": grid, **{f"{grid}/{k}": v for k, v in candidate.setting}})
        trial = self.study.ask()
        trial.suggest_categorical("grid", self.grids)
        for key, values in self.values[grid].items():
            trial.suggest_categorical(f"{grid}/{key}", values)
        trial.set_user_attr("candidate", candidate.index)
        return trial.number

    def ask(self, count: int) -> list[tuple[int, Candidate]]:
        """Up to ``count`` new candidates (trial number, candidate): each grid's fastest corner first;
        once some are screened, up to half of them neighbours of the front (``refinements``), the rest
        the sampler's choices; one the sampler already has is told its result again (no job) and the
        sampler asked anew, one slower by design than a screened one inside every budget is pruned
        (unless a refinement would screen it); where the sampler keeps repeating itself, an unscreened
        candidate at random; a round the sampler cannot fill is filled with refinements."""
        screened = self.screened()
        done = set(screened) | self.failed() | set(self.running().values()) | self.pruned()
        near_front = {c.index for c in self.refinements(len(self.members), set())}
        chosen: list[tuple[int, Candidate]] = []
        for corner in self.corners():
            if corner.index not in done and len(chosen) < count:
                chosen.append((self._trial_for(corner), corner))
                done.add(corner.index)
        for near in self.refinements(min(count // 2, count - len(chosen)), done):
            chosen.append((self._trial_for(near), near))
            done.add(near.index)
        attempts = 0
        while len(chosen) < count and len(done) < len(self.members):
            attempts += 1
            trial = self.study.ask()
            if attempts > 10 * count:
                candidate = self.rng.choice([c for c in self.members if c.index not in done])
            else:
                grid = trial.suggest_categorical("grid", self.grids)
                setting = tuple(
                    sorted(
                        (key, trial.suggest_categorical(f"{grid}/{key}", values))
                        for key, values in self.values[grid].items()
                    )
                )
                candidate = self.by_setting.get((grid, setting))
            if candidate is None or candidate.index in done:
                known = self.screened().get(candidate.index) if candidate is not None else None
                if known is not None:  # the sampler learns it again; no job runs
                    trial.set_user_attr("candidate", candidate.index)
                    self.study.tell(trial, [known.speedup, known.loss])
                else:  # not in the plan, failed, pruned or still running: nothing to learn from it here
                    self.study.tell(trial, state=_fail())
                continue
            if candidate.index not in near_front and self.slower_by_design(candidate, screened):
                trial.set_user_attr("candidate", candidate.index)
                self.study.tell(trial, state=_pruned())
                done.add(candidate.index)
                continue
            trial.set_user_attr("candidate", candidate.index)
            done.add(candidate.index)
            chosen.append((trial.number, candidate))
        for near in self.refinements(count - len(chosen), done):
            chosen.append((self._trial_for(near), near))
        return chosen

    def tell(self, trial_number: int, result: Optional[Result]) -> None:
        """A screening job's result (None: it failed, or measured no budget metric)."""
        if result is None:
            self.study.tell(trial_number, state=_fail())
        else:
            self.study.tell(trial_number, [result.speedup, result.loss])


def _fail():
    import optuna

    return optuna.trial.TrialState.FAIL


def _pruned():
    import optuna

    return optuna.trial.TrialState.PRUNED


def to_measure_fully(
    members: Sequence[Candidate],
    screened: dict[int, Result],
    budgets: Sequence[float],
    per_budget: int,
    slack: float,
    unsure: Collection[int] = (),
) -> list[Candidate]:
    """Per budget, the ``per_budget`` fastest screened candidates whose loss is within the budget (plus
    ``slack`` x budget: a screen's few prompts measure loss loosely), faster than their baseline, and
    not already chosen for a smaller budget: where budgets share their fastest candidates (losses far
    below them all), the next ones are measured too, as a screen's single batch ranks close ones loosely.
    ``unsure``: candidates whose screen was measured while disturbed; its speed cannot rank them (either
    side may have been slowed), so each within a budget is measured in full too, however fast it screened."""
    chosen: dict[int, Candidate] = {}
    by_index = {c.index: c for c in members}
    for budget in sorted(budgets):
        within = sorted(
            (i for i, r in screened.items() if r.speedup > 1 and r.loss <= budget * (1 + slack) and i not in chosen),
            key=lambda i: (-screened[i].speedup, screened[i].loss, i),
        )
        for i in within[:per_budget]:
            chosen[i] = by_index[i]
    widest = max(budgets, default=0.0) * (1 + slack)
    for i in sorted(set(unsure) & set(screened)):
        if screened[i].loss <= widest:
            chosen[i] = by_index[i]
    return [chosen[i] for i in sorted(chosen)]


def front(results: dict[int, Result], budgets: Sequence[float]) -> list[tuple[float, Optional[int]]]:
    """Per budget: the candidate with the highest speedup within it (None: none yet); one whose row was
    disturbed only where none within was measured undisturbed (post-process leaves such rows out
    unless ``include_disturbed=true``; the search's console marks them)."""

    def rank(i: int) -> tuple:
        return not results[i].disturbed, results[i].speedup, -i

    best = []
    for budget in sorted(budgets):
        within = [i for i, r in results.items() if r.loss <= budget and r.speedup > 1]
        best.append((budget, max(within, key=rank) if within else None))
    return best


def grouped(found: Iterable[Candidate]) -> dict[tuple[str, ...], list[Candidate]]:
    groups: dict[tuple[str, ...], list[Candidate]] = defaultdict(list)
    for c in found:
        groups[c.combination].append(c)
    return dict(sorted(groups.items()))
