"""Hydra's own launcher conformance suites, the ones its launcher plugins pass, run against ours: a
generic Hydra app's jobs get Hydra's JobReturn (config, Hydra config, working dir, task name) and
Hydra's run and sweep directories, packed into tasks or not."""

from __future__ import annotations

from hydra.core.singleton import Singleton
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.version import VersionBase
from pytest import fixture, mark

LOCAL = ["hydra.launcher.gpus=[]", "hydra.launcher.poll_s=0.2"]


@fixture(autouse=True)
def hydra_as_in_a_fresh_process(hydra_restore_singletons):
    """The suites assume Hydra's state of a new process: no version_base chosen yet (this suite's other
    tests compose with version_base=1.3, which turns off the job's chdir that the suites expect)."""
    Singleton._instances.pop(VersionBase, None)  # type: ignore[attr-defined]


@mark.parametrize("launcher_name, overrides", [("accel_bench_local", LOCAL)])
class TestPackedLocalLauncher(LauncherTestSuite):
    pass


@mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=accel_bench_local", *LOCAL])])
class TestPackedLocalLauncherIntegration(IntegrationTestSuite):
    pass


def test_our_plugins_leave_every_hydra_app_without_torch():
    """Hydra imports every plugin module at each app's start, ours included: they must not pull in torch
    (seconds per start, for every Hydra app in the environment)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.launcher import Launcher\n"
        "from hydra.plugins.sweeper import Sweeper\n"
        "found = Plugins.instance().discover(Launcher) + Plugins.instance().discover(Sweeper)\n"
        "print(sorted(c.__name__ for c in found if c.__module__.startswith('hydra_plugins.accel_bench')))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["['GridSweeper', 'PackedLocalLauncher', 'PackedSlurmLauncher', 'SearchSweeper']", "False"]
