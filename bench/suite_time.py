"""Where the test suite's time goes: per test file, its wall time and the CPU time the whole machine
spent meanwhile (``/proc/stat``: the suite's own processes, its sandboxes, forked runs and the Slurm
daemons it drives), and from the total the least wall time the suite could take on this machine with
every core busy throughout (CPU time / cores). Where that bound is over a target, no scheduling of
the same tests (``pytest-xdist``, a faster runner) meets it: only less work does. The machine-wide
count takes in anything else running, so run it alone.

    python bench/suite_time.py --out bench/results/suite_time/suite_time.json   # the whole suite
    python bench/suite_time.py --out /tmp/t.json -- tests/test_bar.py -q         # pytest's own arguments

pytest runs in the repository's root, so the paths among its arguments are relative to it.

The tests run in this process through ``pytest.main`` as ``pytest`` runs them; a run whose tests do
not all pass records nothing (its times would be those of a different suite) and exits with pytest's
status. Each run is appended to the file's ``runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from accel_bench.environment import device_name
from accel_bench.watch.host import machine_ns

REPO = Path(__file__).resolve().parents[1]


def machine_busy_s() -> float:
    """The machine's busy CPU seconds since boot, summed over its CPUs, as the host watch reads them.
    Steal (the hypervisor's) counts too; on the CI machine it is 0.2% of the busy time."""
    busy_ns, steal_ns = machine_ns()
    return (busy_ns + steal_ns) / 1e9


@dataclass
class Spent:
    """Wall and machine-wide busy CPU seconds over some tests."""

    tests: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def add(self, wall_s: float, cpu_s: float) -> None:
        self.tests += 1
        self.wall_s += wall_s
        self.cpu_s += cpu_s

    def row(self, cores: int) -> dict:
        return {
            "tests": self.tests,
            "wall_s": round(self.wall_s, 1),
            "cpu_s": round(self.cpu_s, 1),
            "cores_busy": round(self.cpu_s / self.wall_s / cores, 3) if self.wall_s else None,
        }


@dataclass
class Clock:
    """A pytest plug-in: each test's setup, call and teardown timed together, as ``--durations``
    lists them apart."""

    per_test: dict[str, Spent] = field(default_factory=dict)
    failed: int = 0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        began, busy = time.monotonic(), machine_busy_s()
        yield
        self.per_test[item.nodeid] = Spent(1, time.monotonic() - began, machine_busy_s() - busy)

    def pytest_runtest_logreport(self, report):
        self.failed += report.failed


def _machine(cores: int) -> dict:
    return {
        "cpu": device_name(torch.device("cpu")),
        "cores": cores,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytest": pytest.__version__,
    }


def _commit() -> str | None:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return found.stdout.strip() or None


def report(clock: Clock, wall_s: float, cpu_s: float, cores: int, args: list[str], top: int) -> dict:
    """One run's record: the session, each file (slowest first) and the slowest tests."""
    files: dict[str, Spent] = defaultdict(Spent)
    for nodeid, spent in clock.per_test.items():
        files[nodeid.split("::")[0]].add(spent.wall_s, spent.cpu_s)
    by_wall = sorted(clock.per_test.items(), key=lambda kv: (-kv[1].wall_s, kv[0]))
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python bench/suite_time.py", *(["--", *args] if args else [])]),
        "commit": _commit(),
        "machine": _machine(cores),
        "tests": len(clock.per_test),
        "wall_s": round(wall_s, 1),
        "cpu_s": round(cpu_s, 1),
        "cores_busy": round(cpu_s / wall_s / cores, 3),
        "least_wall_s": round(cpu_s / cores, 1),
        "files": {
            name: spent.row(cores) for name, spent in sorted(files.items(), key=lambda kv: (-kv[1].wall_s, kv[0]))
        },
        "slowest": [{"test": nodeid, **spent.row(cores)} for nodeid, spent in by_wall[:top]],
    }


def _print(run: dict) -> None:
    cores = run["machine"]["cores"]
    print(f"\n{run['tests']} tests in {run['wall_s']:.0f} s on {cores} cores ({run['machine']['cpu']})")
    print(f"{'file':<34} {'tests':>5} {'wall s':>8} {'cpu s':>8} {'cores busy':>10}")
    for name, row in run["files"].items():
        busy = "-" if row["cores_busy"] is None else f"{row['cores_busy']:.0%}"
        print(f"{name:<34} {row['tests']:>5} {row['wall_s']:>8.1f} {row['cpu_s']:>8.1f} {busy:>10}")
    print(
        f"the machine's CPU time over the session: {run['cpu_s']:.0f} s, {run['cores_busy']:.0%} of its {cores} "
        f"cores; with every core busy throughout it would take at least {run['least_wall_s']:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file; this run is appended to its runs")
    parser.add_argument("--top", type=int, default=25, help="how many of the slowest tests to keep")
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest's own arguments (default: the suite)")
    args = parser.parse_args()
    args.out = args.out.resolve()  # pytest runs in the repository, whose paths its arguments name
    if machine_ns() is None:
        parser.error("the machine's CPU time: /proc/stat is not readable here; a Linux machine")
    if args.top < 0:
        parser.error(f"--top: {args.top} is not allowed; an integer >= 0")
    if args.out.exists():
        try:
            runs = json.loads(args.out.read_text())["runs"]
            if not isinstance(runs, list):
                raise TypeError(runs)
        except (ValueError, KeyError, TypeError):
            parser.error(f"--out: {args.out} is not a suite_time record (a JSON object with a runs list)")
    else:
        runs = []
    cores = os.cpu_count() or 1
    clock = Clock()
    os.chdir(REPO)
    began, busy = time.monotonic(), machine_busy_s()
    status = pytest.main(list(args.pytest_args), plugins=[clock])  # it adds its addopts to the list
    wall_s, cpu_s = time.monotonic() - began, machine_busy_s() - busy
    if status != 0 or clock.failed or not clock.per_test:
        print(f"suite_time: pytest exited {int(status)} with {clock.failed} failed; nothing recorded", file=sys.stderr)
        sys.exit(int(status) or 1)
    run = report(clock, wall_s, cpu_s, cores, args.pytest_args, args.top)
    _print(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"runs": runs + [run]}, indent=2) + "\n")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
