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
