"""Shared fixtures: configs composed with Hydra's compose API, tiny pipelines built once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# One random-weight cache for the session (and for the run.py subprocesses it starts), offline;
# removed at the session's end unless the caller named its own.
_OWN_CACHE = None if "ACCEL_BENCH_CACHE" in os.environ else tempfile.mkdtemp(prefix="accel_bench_test_cache_")
if _OWN_CACHE:
    os.environ["ACCEL_BENCH_CACHE"] = _OWN_CACHE
os.environ["HF_HUB_OFFLINE"] = "1"

from accel_bench.config import compose_run_config, register_configs  # noqa: E402
from accel_bench.pipelines import load_pipeline  # noqa: E402

from .forkserver import ForkServer  # noqa: E402

FORKS = ForkServer()  # ``python ...`` command lines without the interpreter's imports each time

register_configs()

# Small enough for a 2-core CPU; T-GATE's gate must fall inside the few steps.
FAST = ["steps=4", "batch_size=2", "num_prompts=3", "warmup_batches=1"]
ACCELS = [
    "none",
    "deepcache",
    "tome",
    "tgate",
    "deepcache_tome",
    "tgate_deepcache",
    "tgate_tome",
    "tgate_deepcache_tome",
]


def pytest_sessionfinish(session, exitstatus):
    FORKS.close()
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def fast_overrides(accel: str) -> list[str]:
    return FAST + [f"accel={accel}"] + (["accel.gate_step=2"] if "tgate" in accel else [])


def run_cli(args: Sequence[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` in ``cwd`` (Hydra's outputs land there), forked from the session's server."""
    return FORKS.run([str(REPO / "run.py"), *args], cwd, timeout)


@pytest.fixture(scope="session")
def tiny_pipe():
    pipe, _, _ = load_pipeline(
        compose_run_config(["pipeline=tiny"]).pipeline, "cpu", torch.float32, os.environ["ACCEL_BENCH_CACHE"]
    )
    return pipe


@pytest.fixture(scope="session")
def tiny_xl_pipe():
    pipe, _, _ = load_pipeline(
        compose_run_config(["pipeline=tiny_xl"]).pipeline, "cpu", torch.float32, os.environ["ACCEL_BENCH_CACHE"]
    )
    return pipe


@pytest.fixture
def pipes(tiny_pipe, tiny_xl_pipe):
    return {"tiny": tiny_pipe, "tiny_xl": tiny_xl_pipe}


@pytest.fixture
def traced_only(monkeypatch):
    """torch.compile with dynamo tracing as it is, the traced graphs run as traced instead of by
    inductor (whose kernels take minutes to build for the tiny UNet on this CPU); yields the graphs
    dynamo made. ``nn.Module.compile`` calls ``torch.compile`` too."""
    import torch._dynamo

    graphs, real = [], torch.compile

    def keep(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    def compile_traced(model=None, *, mode=None, fullgraph=False, dynamic=None, **kwargs):
        return real(model, backend=keep, fullgraph=fullgraph, dynamic=dynamic)

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", compile_traced)
    yield graphs
    torch._dynamo.reset()


@contextmanager
def cpu_hogs(per_cpu: int = 1):
    """``per_cpu`` CPU-bound processes for each CPU of the machine."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(per_cpu * (os.cpu_count() or 1))
    ]
    try:
        time.sleep(0.5)
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
