"""GridSweeper: Hydra's basic sweeper, plus named grids whose cartesian products are joined.

A method's grid only makes sense with its own parameters (DeepCache's intervals are no ToMe
ratios), so a sweep over several methods is a union of grids, not one product:

    hydra.sweeper.params:  pipeline: sd15,sdxl        (crossed with every grid)
    hydra.sweeper.grids:   deepcache: {accel: deepcache, accel.cache_interval: 2,3,4}
                           tome:      {accel: tome, accel.ratio: 0.3,0.5}

Jobs are numbered grid by grid (grids sorted by name), so the same sweep always gives the same
job numbers and job directories: re-running it into the same sweep dir resumes it.
"""

# No "from __future__ import annotations" here: Hydra executes plugin modules under another
# name, where a dataclass with string annotations cannot find its own module.
import json
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from accel_bench.errors import exit_2_on_config_error
from accel_bench.sweep.jobs import (
    LOST_EXIT_CODE,
    STATUSES,
    check_sweep_dir,
    disturbed_rows,
    entries,
    remove_new,
    resume_command,
    sweep_cost,
)
from accel_bench.sweep.layout import SweepLayout


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.accel_bench_sweeper.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    grids: Optional[Dict[str, Dict[str, Any]]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="accel_bench")


def expand_grids(
    common: List[str], grids: Dict[str, Dict[str, Any]], arguments: List[str], parser: Optional[OverridesParser] = None
) -> List[List[str]]:
    """Every job's overrides: for each grid (sorted by name), common params x grid params x command line."""
    parser = parser or OverridesParser.create()
    jobs: List[List[str]] = []
    for grid in [grids[name] for name in sorted(grids)] or [{}]:
        lines = common + [f"{key}={value}" for key, value in grid.items()] + list(arguments)
        (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(lines), max_batch_size=None)
        jobs.extend(batch)
    return jobs


class GridSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: Optional[int],
        params: Optional[Dict[str, str]] = None,
        grids: Optional[Dict[str, Dict[str, Any]]] = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grids = grids or {}

    def job_overrides(self, arguments: List[str]) -> List[List[str]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        return expand_grids(self._parse_config(), self.grids, arguments, parser)

    @contextmanager
    def removed_if_refused(self, sweep_dir: Path) -> Iterator[None]:
        """A sweep whose first launch is refused before anything ran (exit 2: sbatch refused the array,
        nothing was submitted) leaves the folder as it found it: what it wrote for that launch (the
        plan, multirun.yaml, a search's state) is removed, and the folder where it made it."""
        before = entries(sweep_dir)
        self.launched = False
        try:
            yield
        except SystemExit as stop:
            if stop.code == 2 and not self.launched:
                remove_new(sweep_dir, before)
            raise

    def launch(self, batch: List[List[str]], initial_job_idx: int) -> Any:
        returns = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
        self.launched = True
        return returns

    def sweep(self, arguments: List[str]) -> Any:
        jobs = self.job_overrides(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        with exit_2_on_config_error():
            check_sweep_dir(SweepLayout(sweep_dir), jobs)
        with self.removed_if_refused(sweep_dir):
            return self._sweep(jobs, sweep_dir)

    def _sweep(self, jobs: List[List[str]], sweep_dir: Path) -> Any:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        SweepLayout(sweep_dir).plan.write_text(json.dumps({"started": started, "jobs": jobs}, indent=1) + "\n")
        size = self.max_batch_size if self.max_batch_size and self.max_batch_size > 0 else len(jobs)
        self.overrides = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, initial_job_idx = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            results = self.launch(batch, initial_job_idx)
            initial_job_idx += len(batch)
            returns.append(results)
        # a job's return value is its status; reading it re-raises a job that crashed outright
        statuses = [str(result.return_value) for results in returns for result in results]
        self.report(statuses, sweep_dir, started)
        if "lost" in statuses:
            sys.exit(LOST_EXIT_CODE)
        return returns

    def report(self, statuses: List[str], sweep_dir: Path, started: str) -> None:
        """The closing tally: jobs per status, where the time went, and the lost jobs' resume command."""
        tally = Counter(statuses)
        counts = ", ".join(f"{tally.get(status, 0)} {status}" for status in STATUSES)
        others = ", ".join(f"{n} {status}" for status, n in sorted(tally.items()) if status not in STATUSES)
        print(f"[sweep] {len(statuses)} jobs: {counts}{', ' + others if others else ''} | {sweep_dir}", flush=True)
        cost = sweep_cost(SweepLayout(sweep_dir), started)
        if cost.jobs:
            print(
                f"[sweep] {cost.jobs} jobs ran for {cost.job_s:.1f} s, {cost.measured_share:.1%} of it inside measured "
                f"pipeline calls ({cost.measured_s:.1f} s); {cost.pipeline_loads} pipeline loads",
                flush=True,
            )
        disturbed = disturbed_rows(SweepLayout(sweep_dir), started)
        if disturbed:
            print(
                f"[sweep] {len(disturbed)} ok row(s) disturbed (a busy host, other GPU work, outlier batches): "
                f"post-process leaves them out unless include_disturbed=true; jobs "
                f"{', '.join(sorted(Path(r.run_dir or '?').name for r in disturbed))}",
                flush=True,
            )
        lost = [str(num) for num, status in enumerate(statuses) if status == "lost"]
        if lost:
            overrides = self.config.hydra.overrides
            command = resume_command(sys.argv[0], list(overrides.hydra), list(overrides.task), sweep_dir)
            print(
                f"[sweep] lost: {'job' if len(lost) == 1 else 'jobs'} {', '.join(lost)}: no result (a task died). "
                f"This command runs again exactly the jobs without an ok result:\n  {command}",
                flush=True,
            )
