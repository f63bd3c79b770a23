"""SearchSweeper: the grid's candidates, searched instead of all run (``hydra/sweeper=search``).

    python run.py -m +sweep=deepcache_tome hydra/sweeper=search pipeline=sd15 steps=20

Same search space as the grid sweeper (``hydra.sweeper.params`` crossed with each of
``hydra.sweeper.grids``, the ``conf/sweep/*.yaml`` files unchanged). Per combination (pipeline,
scheduler, steps, batch size) an Optuna study (TPE, two objectives: speedup up, the budget metric's
loss down) picks candidates to screen, a few per round, each a cheap job (``screen`` overrides: fewer
prompts, one repeat, no FLOPs count); then the fastest screened candidates within each of ``budgets``
are measured in full, and so is every screened candidate within a budget whose screen was disturbed
(its speed cannot rank it). Rows are ordinary rows (``search_stage`` says screen or full: post-process
selects among full ones); jobs go through the configured launcher, packed, and a search cut short
resumes from its state in the sweep folder (``search/``).
"""

# No "from __future__ import annotations" here: Hydra executes plugin modules under another
# name, where a dataclass with string annotations cannot find its own module.
import dataclasses
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from accel_bench.errors import ConfigError, exit_2_on_config_error
from accel_bench.limits import MAX_SEED, Limit, check_limits, limited
from accel_bench.record import read_result, read_rows
from accel_bench.sweep import search
from accel_bench.sweep.jobs import LOST_EXIT_CODE, check_sweep_dir
from accel_bench.sweep.layout import SweepLayout

from .grid_sweeper import GridSweeper, expand_grids


@dataclass
class SearchSweeperConf:
    _target_: str = "hydra_plugins.accel_bench_sweeper.search_sweeper.SearchSweeper"
    max_batch_size: Optional[int] = None  # unused: each round is one launch
    params: Optional[Dict[str, str]] = None  # as the grid sweeper's: crossed with every grid
    grids: Optional[Dict[str, Dict[str, Any]]] = None  # the search space: the grid sweeper's named grids
    budgets: List[float] = field(default_factory=lambda: [0.02, 0.05, 0.1])  # the budgets it must answer
    budget_metric: str = "clip"  # what the budgets bound (accel_bench.metrics: clip | ssim | lpips)
    # a screening job's overrides: cheap, and its loss still comparable across candidates (one full batch,
    # so a screen runs the batch shape the full job runs)
    screen: Dict[str, Any] = field(
        default_factory=lambda: {"num_prompts": "${batch_size}", "repeats": 1, "count_flops": False}
    )
    # screen at most this share of each combination's candidates
    screen_share: float = limited(0.25, Limit(0, 1, integer=False, above=True, unit="a share"))
    # candidates the sampler picks per combination per round; each round is one launch, so 6 (the launchers'
    # jobs_per_task) makes it one task. The first round is the sampler's random start-up, the later ones
    # follow what it measured
    round_size: int = limited(6, Limit(1))
    # per budget, the fastest screened candidates within it measured in full
    full_per_budget: int = limited(2, Limit(1))
    # a screened loss up to budget x (1 + slack) still counts as within it
    slack: float = limited(0.5, Limit(0, integer=False))
    seed: int = limited(0, Limit(0, MAX_SEED, meaning="the samplers' seed range"))  # the samplers' seed


ConfigStore.instance().store(group="hydra/sweeper", name="search", node=SearchSweeperConf, provider="accel_bench")


class SearchSweeper(GridSweeper):
    def __init__(
        self,
        max_batch_size: Optional[int],
        params: Optional[Dict[str, str]] = None,
        grids: Optional[Dict[str, Dict[str, Any]]] = None,
        budgets: Optional[List[float]] = None,
        budget_metric: str = "clip",
        screen: Optional[Dict[str, Any]] = None,
        screen_share: float = 0.25,
        round_size: int = 6,
        full_per_budget: int = 2,
        slack: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params, grids=grids)
        self.budgets = sorted(budgets or [])
        self.budget_metric = budget_metric
        self.screen = dict(screen or {})
        self.screen_share, self.round_size, self.full_per_budget = screen_share, round_size, full_per_budget
        self.slack, self.seed = slack, seed

    def sweep(self, arguments: List[str]) -> Any:
        with exit_2_on_config_error():
            self._check()
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        common = self._parse_config()
        names = sorted(self.grids) or [""]
        by_grid = {n: expand_grids(common, {n: self.grids[n]} if n else {}, arguments, parser) for n in names}
        self.found = search.candidates(by_grid)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        self.layout = SweepLayout(sweep_dir)
        planned = [list(c.overrides) for c in self.found]
        with exit_2_on_config_error():  # before anything is written there
            check_sweep_dir(self.layout, planned, search=True)
            self.ledger = search.Ledger(self.layout.search_ledger, self.found)
        with self.removed_if_refused(sweep_dir):
            return self._search(sweep_dir, planned)

    def _search(self, sweep_dir: Path, planned: List[List[str]]) -> List[str]:
        import optuna
        from optuna.storages.journal import JournalFileBackend

        from accel_bench.accelerators import speed_directions  # torch: not at Hydra's plugin scan

        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        plan = {"started": self.started, "jobs": planned, "search": True}
        self.layout.plan.write_text(json.dumps(plan, indent=1) + "\n")
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.layout.search_journal.parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(self.layout.search_journal)))
        self.studies = {
            combination: search.Study(
                search.combination_name(combination),
                members,
                storage,
                self.seed,
                startup=self.round_size,
                budgets=self.budgets,
                slack=self.slack,
                directions=speed_directions(),
            )
            for combination, members in search.grouped(self.found).items()
        }
        statuses: List[str] = []
        # trials launched by an earlier run whose jobs never reported: launched again
        batch = [(c, t, self.found[i]) for c, s in self.studies.items() for t, i in sorted(s.running().items())]
        round_number = 0
        while True:
            batch += [(c, t, cand) for c, s in self.studies.items() for t, cand in s.ask(self._allowance(c))]
            if not batch:
                break
            round_number += 1
            statuses += self._screen(batch)
            batch = []
            self._progress(f"round {round_number}")
        done = self._fully_measured()
        unsure = self._disturbed_screens(self._rows())
        if unsure:
            print(
                f"[search] {len(unsure)} screen(s) measured while disturbed: their speed cannot rank them, so "
                "each within a budget is measured in full",
                flush=True,
            )
        full = [
            c
            for combination, study in self.studies.items()
            for c in search.to_measure_fully(
                study.members, study.screened(), self.budgets, self.full_per_budget, self.slack, unsure
            )
            if c.index not in done
        ]
        if full:
            statuses += self._launch([(c, search.FULL, None) for c in full])
        self.report(statuses, sweep_dir, self.started)
        self._progress("done")
        if "lost" in statuses:
            sys.exit(LOST_EXIT_CODE)
        return statuses

    def _check(self) -> None:
        from accel_bench import metrics

        metrics.check_budget_metric(self.budget_metric, "hydra.sweeper.budget_metric")
        if not self.budgets or not all(0 <= b < 1 for b in self.budgets):
            raise ConfigError("hydra.sweeper.budgets", self.budgets, "a list of budgets in [0, 1), e.g. [0.02,0.05]")
        check_limits(self, SearchSweeperConf, "hydra.sweeper.")
        self._check_screen()

    def _check_screen(self) -> None:
        """Each ``screen`` value composes into a run's config, or every screening job would fail."""
        from hydra.errors import ConfigCompositionException

        from accel_bench.config import check
        from accel_bench.overrides import composition_error

        overrides = [f"{key}={value}" for key, value in self.screen.items()]
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        except ConfigCompositionException as error:
            refused = composition_error(error, overrides)
            if refused is None:
                raise ConfigError("hydra.sweeper.screen", dict(self.screen), f"overrides of a run's config ({error})")
            raise ConfigError(f"hydra.sweeper.screen.{refused.key}", refused.value, refused.allowed) from None
        try:
            check(cfg)
        except ConfigError as error:
            if error.key in self.screen:  # a screen value no job can run with; other keys are each job's to judge
                raise ConfigError(f"hydra.sweeper.screen.{error.key}", error.value, error.allowed) from None

    def _allowance(self, combination: tuple) -> int:
        study = self.studies[combination]
        allowed = max(min(len(study.members), self.round_size), math.ceil(self.screen_share * len(study.members)))
        used = len(study.screened()) + len(study.failed()) + len(study.running())
        return max(0, min(self.round_size, allowed - used))

    def _overrides(self, candidate: search.Candidate, stage: str) -> List[str]:
        """The candidate's grid job, plus for a screen the ``screen`` values in place of its own."""
        extra = {k: v for k, v in self.screen.items()} if stage == search.SCREEN else {}
        kept = [line for line in candidate.overrides if line.split("=", 1)[0] not in extra]
        return kept + [f"{k}={v}" for k, v in extra.items()] + [f"search_stage={stage}"]

    def _launch(self, jobs: List[tuple]) -> List[str]:
        """Launch ``(candidate, stage, trial)`` jobs as one batch, recorded in the ledger first."""
        first = self.ledger.next_job
        for offset, (candidate, stage, trial) in enumerate(jobs):
            self.ledger.add(first + offset, candidate.index, stage, trial)
        self.ledger.save()
        returns = self.launch([self._overrides(c, stage) for c, stage, _ in jobs], first)
        self.returns = list(returns)
        return [str(r.return_value) for r in self.returns]

    def _screen(self, batch: List[tuple]) -> List[str]:
        first = self.ledger.next_job
        statuses = self._launch([(candidate, search.SCREEN, trial) for _, trial, candidate in batch])
        for offset, ((combination, trial, _), status, returned) in enumerate(zip(batch, statuses, self.returns)):
            if status == "lost":
                continue  # left running in the study: the next run launches it again
            row = read_result(self._job_dir(first + offset, returned))
            self.studies[combination].tell(trial, search.result_of(row, self.budget_metric))
        return statuses

    def _job_dir(self, job: int, returned: Any = None) -> Path:
        """Where job ``job`` ran: its Hydra output dir where the launcher reports it, else the sweep's
        ``<sweep dir>/<job num>``; absolute, as rows record it."""
        hydra_cfg = getattr(returned, "hydra_cfg", None)
        if hydra_cfg is not None and hydra_cfg.hydra.runtime.output_dir:
            return Path(hydra_cfg.hydra.runtime.output_dir).resolve()
        return self.layout.job(job).resolve()

    def _rows(self) -> Dict[Path, Any]:
        return {Path(r.run_dir).resolve(): r for r in read_rows(self.layout.summary) if r.run_dir}

    def _stage_rows(self, stage: str, rows: Dict[Path, Any]) -> List[tuple]:
        """(candidate, row) for each of the ledger's ``stage`` jobs that wrote a row."""
        found = []
        for job, entry in self.ledger.jobs.items():
            row = rows.get(self._job_dir(job)) if entry["stage"] == stage else None
            if row is not None:
                found.append((entry["candidate"], row))
        return found

    def _disturbed_screens(self, rows: Dict[Path, Any]) -> set:
        """Candidates whose ok screening row says what disturbed it."""
        return {c for c, row in self._stage_rows(search.SCREEN, rows) if row.status == "ok" and row.disturbed}

    def _fully_measured(self) -> set:
        """Candidates with an ok full row (from the ledger's full jobs and their run folders)."""
        done = set()
        for job, entry in self.ledger.jobs.items():
            if entry["stage"] == search.FULL:
                row = read_result(self._job_dir(job))
                if row is not None and row.status == "ok":
                    done.add(entry["candidate"])
        return done

    def _progress(self, when: str) -> None:
        """Jobs and job-seconds spent against the grid's, and the current front per combination."""
        rows = self._rows()
        spent = {search.SCREEN: [0, 0.0], search.FULL: [0, 0.0]}
        full_job_s = []
        for job, entry in self.ledger.jobs.items():
            row = rows.get(self._job_dir(job))
            if row is not None:
                spent[entry["stage"]][0] += 1
                spent[entry["stage"]][1] += row.job_s or 0.0
                if entry["stage"] == search.FULL and row.status == "ok":
                    full_job_s.append(row.job_s or 0.0)
        total_s = spent[search.SCREEN][1] + spent[search.FULL][1]
        grid = (
            f"the grid: {len(self.found)} jobs, about {len(self.found) * statistics.median(full_job_s):.0f} job-s "
            f"({total_s / (len(self.found) * statistics.median(full_job_s)):.0%} of it spent)"
            if full_job_s
            else f"the grid: {len(self.found)} jobs (its cost known after the first full job)"
        )
        pruned = sum(len(study.pruned()) for study in self.studies.values())
        print(
            f"[search] {when}: {spent[search.SCREEN][0]} screening and {spent[search.FULL][0]} full jobs, "
            f"{total_s:.1f} job-s, {pruned} candidates pruned as slower by design; {grid}",
            flush=True,
        )
        full, unsure = self._full_results(rows), self._disturbed_screens(rows)
        for combination, study in self.studies.items():
            screened = {i: dataclasses.replace(r, disturbed=i in unsure) for i, r in study.screened().items()}
            measured, kind = (full[combination], "full") if full.get(combination) else (screened, "screened")
            best = ", ".join(
                f"{budget:g}: "
                + (
                    f"{measured[i].speedup:.2f}x{' (disturbed)' if measured[i].disturbed else ''} "
                    f"{study.describe(self.found[i])}"
                    if i is not None
                    else "-"
                )
                for budget, i in search.front(measured, self.budgets)
            )
            print(f"[search]   {search.combination_name(combination)} ({kind}) | {best}", flush=True)

    def _full_results(self, rows: Dict[Path, Any]) -> Dict[tuple, Dict[int, "search.Result"]]:
        found: Dict[tuple, Dict[int, search.Result]] = {}
        for index, row in self._stage_rows(search.FULL, rows):
            result = search.result_of(row, self.budget_metric)
            if result is not None:
                found.setdefault(self.found[index].combination, {})[index] = result
        return found
