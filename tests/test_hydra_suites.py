"""Hydra's own launcher conformance suites, the ones its launcher plugins pass, run against ours: a
generic Hydra app's jobs get Hydra's JobReturn (config, Hydra config, working dir, task name) and
Hydra's run and sweep directories, packed into tasks or not."""

from __future__ import annotations

from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark

LOCAL = ["hydra.launcher.gpus=[]", "hydra.launcher.poll_s=0.2"]


@mark.parametrize("launcher_name, overrides", [("accel_bench_local", LOCAL)])
class TestPackedLocalLauncher(LauncherTestSuite):
    pass


@mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=accel_bench_local", *LOCAL])])
class TestPackedLocalLauncherIntegration(IntegrationTestSuite):
    pass
