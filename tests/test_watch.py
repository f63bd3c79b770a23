"""The watches: a busy host seen by the kernel's run-queue accounting, other GPU work through NVML (a fake
stands in for it: no GPU here; bench/results/gpu_watch/ has the real one), outlier batches, queued work
charged to whoever left it; passes that were not clean measured again; rows, console, sweep and
post-process saying so."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from accel_bench.console import watch_lines
from accel_bench.measure import WarmupPolicy, measure_sides, paired_passes, speedup_ratios
from accel_bench.postprocess.select import left_out
from accel_bench.record import Row, Side, read_rows, upsert_summary
from accel_bench.watch.checks import PassCheck, Watch
from accel_bench.watch.compiles import CompileWatch
from accel_bench.watch.device import DeviceWatch, Foreign
from accel_bench.watch.host import CONTENDED_WAIT_SHARE, HostWatch
from accel_bench.watch.outliers import outliers

from .conftest import FAST, cpu_hogs, run_cli
from .test_noise import fake_generate, scripted_clock
from .test_postprocess import measured_of, row

CPU = torch.device("cpu")


def _wait_share(seconds: float) -> float:
    host = HostWatch()
    host.start()
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        pass
    share = host.stop(time.perf_counter() - began)
    assert share is not None  # Linux reports schedstat
    return share


def test_a_busy_host_is_seen_by_the_run_queue_wait():
    quiet = _wait_share(0.5)
    with cpu_hogs(per_cpu=4):  # one spinning thread among 4 per CPU gets about 2/9 of a CPU: waits ~78%
        busy = _wait_share(0.5)
    assert quiet < CONTENDED_WAIT_SHARE < busy


def test_cpu_stolen_by_the_hypervisor_counts_as_waiting(tmp_path):
    """A guest's thread on a virtual CPU the hypervisor took away is "running" to the guest's run
    queue: the machine-wide steal of /proc/stat (this one's own, then one that grew by 0.3 s) adds
    to the share."""
    from accel_bench.watch.host import machine_ns

    busy, stolen = machine_ns()  # Linux reports both (steal is 0 on bare metal)
    assert busy > 0 and stolen >= 0
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  100 0 50 900 3 0 1 {2 * tick} 0 0\ncpu0 1 2 3\n")
    assert machine_ns(str(stat)) == (151 * 1_000_000_000 // tick, 2_000_000_000)
    host = HostWatch(stat=str(stat))
    host.start()
    stat.write_text(f"cpu  100 0 50 990 3 0 1 {2 * tick + round(0.3 * tick)} 0 0\n")
    assert host.stop(1.0) >= 0.3 - 1 / tick
    (tmp_path / "unreadable").write_text("cpu  1 2\n")
    host = HostWatch(stat=str(tmp_path / "unreadable"))  # no machine figures: the run-queue wait alone
    host.start()
    assert 0 <= host.stop(1.0) < 0.3


def _spinners(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_threads_waiting_for_each_other_are_no_busy_host():
    """Watched work with more runnable threads than CPUs (here processes, four per CPU) waits for
    itself on a quiet machine: that is its workload, not a busy host. The same work beside as many
    other CPU-bound processes waits for them, and is contended."""
    cpus = os.cpu_count() or 1
    work = _spinners(4 * cpus)
    try:
        time.sleep(0.5)
        host = HostWatch(lambda: [p.pid for p in work])

        def share() -> float:
            host.start()
            time.sleep(1.0)
            return host.stop(1.0)

        alone = share()
        with cpu_hogs(per_cpu=4):
            beside = share()
    finally:
        for p in work:
            p.kill()
            p.wait()
    assert alone < CONTENDED_WAIT_SHARE < beside, (alone, beside)


class ScriptedHost:
    """A host watch whose batches waited as scripted (share of wall time)."""

    def __init__(self, shares):
        self.shares = iter(shares)

    def start(self):
        pass

    def stop(self, wall_s):
        return next(self.shares)


class FakeDrain:
    def __init__(self, seconds):
        self.seconds = seconds

    def until_idle(self):
        return self.seconds, True


def _sides(monkeypatch, watch, repeats=2, max_repeats=4, batches=2, durations=None):
    """One side of ``batches`` batches a pass, each taking 1 s (or ``durations``) by a scripted clock."""
    scripted_clock(monkeypatch, durations or [1.0] * batches * max_repeats)

    @contextmanager
    def opened():
        yield fake_generate, None

    (measured,) = measure_sides(
        [opened],
        list("abcd")[: 2 * batches],
        batch_size=2,
        seed=0,
        warmup=WarmupPolicy(0),
        device=CPU,
        repeats=repeats,
        max_repeats=max_repeats,
        count_flops=False,
        watches=[watch],
    )
    return measured


def test_a_contended_pass_is_measured_again_and_left_out(monkeypatch):
    # pass 2's first batch waited 90% of its time for a CPU: measured again, the figures use passes 1 and 3
    measured = _sides(monkeypatch, Watch(ScriptedHost([0.0, 0.01, 0.9, 0.0, 0.02, 0.0]), DeviceWatch(CPU)))
    assert measured.repeats == 3 and measured.clean_passes == [0, 2]
    side = Side.of(measured, compiled=False, passes=measured.clean_passes)
    assert (side.dropped_passes, side.contended_batches, side.causes()) == (1, 0, [])


def test_contention_that_persists_is_reported_not_hidden(monkeypatch):
    measured = _sides(monkeypatch, Watch(ScriptedHost([0.9] * 8), DeviceWatch(CPU)))
    assert measured.repeats == 4 and measured.clean_passes == []  # the cap: max_repeats
    base_passes, passes = paired_passes(measured, measured, interleaved=False)
    assert passes == [0, 1, 2, 3]  # no clean pass: all of them, and the row says why
    side = Side.of(measured, compiled=False, passes=passes)
    assert side.contended_batches == 8 and side.host_wait_max == 0.9
    assert side.causes() == ["8 batch(es) on a busy host (waited up to 90% for a CPU)"]
    row_ = Row(run_id="x", timestamp="t", status="ok", accel="deepcache", accelerated=side, base=Side())
    assert row_.disturbance() == "deepcache: 8 batch(es) on a busy host (waited up to 90% for a CPU)"


def test_fewer_clean_passes_than_asked_disturb_the_row(monkeypatch):
    # every pass after the first has a slow first batch (a CUDA graph recorded again): measured again to the
    # cap, one clean pass; its figures have no spread to judge them by, and the row says so
    durations = [1.0, 1.0] + [5.0, 1.0] * 5
    measured = _sides(monkeypatch, Watch(ScriptedHost([0.0] * 12), DeviceWatch(CPU)), 3, 6, durations=durations)
    assert measured.repeats == 6 and measured.clean_passes == [0]
    base_passes, passes = paired_passes(measured, measured, interleaved=False)
    side = Side.of(measured, compiled=False, passes=passes)
    assert side.causes() == [] and side.dropped_passes == 5
    short = Row(run_id="x", timestamp="t", status="ok", accel="fast", accelerated=side, base=side)
    short.repeats, short.repeats_asked = len(passes), 3
    assert short.disturbance() == "1 of 3 pass(es) clean after measuring again"
    short.repeats_asked = 1
    assert short.disturbance() is None


def test_a_recompile_inside_a_measured_pass_is_seen_and_the_pass_measured_again(monkeypatch):
    """torch's own compile callbacks: dynamo tracing a frame again in pass 2 (a new shape); the batch times
    alike, so only this watch can see it."""
    CompileWatch().start()
    torch._dynamo.reset()  # as a test or a user may between runs: the next pass's watch registers again
    traced = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    traced(torch.ones(2))  # compiled before the passes, as a warm-up would
    calls = iter(range(100))

    def generate(prompts, generators):
        traced(torch.ones(3 if next(calls) == 2 else 2))  # pass 2's first batch: a shape never seen
        return fake_generate(prompts, generators)

    scripted_clock(monkeypatch, [1.0] * 8)

    @contextmanager
    def opened():
        yield generate, None

    (measured,) = measure_sides(
        [opened], list("abcd"), batch_size=2, seed=0, warmup=WarmupPolicy(0), device=CPU, repeats=2,
        max_repeats=4, count_flops=False, watches=[Watch(ScriptedHost([0.0] * 8), DeviceWatch(CPU))],
    )  # fmt: skip
    assert [c.compilations for c in measured.checks] == [{}, {"compilation": 1}, {}]
    assert measured.clean_passes == [0, 2] and measured.checks[1].causes() == ["compiled: 1 compilation(s)"]
    every = Side.of(measured, compiled=True)  # had no pass been clean, the row would say why
    assert every.causes() == ["1 pass(es) compiling in measured batches (1 compilation(s))"]
    assert Side.of(measured, compiled=True, passes=measured.clean_passes).causes() == []


def test_a_stored_check_from_another_version_reads_back():
    # a baseline shared on disk keeps its checks: fields this version does not know are ignored
    assert PassCheck.from_json({"outliers": [1], "written_by_a_newer_version": 3}) == PassCheck(outliers=[1])


def test_a_cuda_graph_recorded_inside_a_pass_is_named_as_such():
    from torch._dynamo.callback import CallbackTrigger, callback_handler

    torch._dynamo.reset()  # clears every compile callback: each start registers again
    watch = CompileWatch()
    watch.start()
    with callback_handler.install_callbacks(CallbackTrigger.CUDAGRAPH_RECORDING, "0/0"):  # as inductor records one
        pass
    assert watch.stop() == {"CUDA graph recording": 1}
    watch.start()
    assert watch.stop() == {}


def test_an_outlier_batch_is_seen_and_its_pass_measured_again(monkeypatch):
    # 3 passes of 2 batches; pass 2's second batch took 5x the others: a fourth pass replaces it
    durations = [1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0]
    watch = Watch(ScriptedHost([0.0] * 8), DeviceWatch(CPU))
    measured = _sides(monkeypatch, watch, repeats=3, max_repeats=6, durations=durations)
    assert [c.outliers for c in measured.checks] == [[], [1], [], []]
    assert measured.clean_passes == [0, 2, 3]
    assert speedup_ratios(measured, measured) == [1.0, 1.0, 1.0]


def test_the_outlier_rule():
    assert outliers([1.0, 1.1, 0.9, 1.6, 1.0], [4] * 5) == [3]  # > 1.5x the median of its size
    assert outliers([1.0, 1.0, 1.0, 1.0, 0.6], [4] * 5) == [4]  # a fast one is as suspect
    assert outliers([1.0, 1.0, 1.0, 9.0], [4] * 4) == []  # four batches of a size: too few to judge by
    assert outliers([1.0] * 5 + [0.4] * 2, [4] * 5 + [1] * 2) == []  # sizes judged apart


def test_left_over_work_is_charged_to_the_side_that_left_it(monkeypatch):
    clean = _sides(monkeypatch, Watch(ScriptedHost([0.0] * 8), DeviceWatch(CPU)))
    charged = _sides(monkeypatch, Watch(ScriptedHost([0.0] * 8), DeviceWatch(CPU), FakeDrain(2.0)))
    assert [c.leftover_s for c in charged.checks] == [2.0, 2.0]
    # 4 images a pass: 2 s of queued work adds 0.5 s per image, and the pass stays clean (it is charged)
    for with_work, without in zip(charged.repeat_latencies_s, clean.repeat_latencies_s):
        assert with_work == pytest.approx(without + 0.5, abs=0.05)
    assert charged.clean_passes == [0, 1]


class FakeNvml:
    """pynvml's calls as the H200 answered them (bench/results/gpu_watch/)."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotFound(NVMLError):
        pass

    def __init__(self, running, samples=None, per_process=True):
        self.running, self.samples, self.per_process = running, samples or [], per_process

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=1 << 30) for pid in self.running]

    def nvmlDeviceGetProcessUtilization(self, handle, since):
        if not self.per_process:
            raise self.NVMLError("Not Supported")
        if not self.samples:
            raise self.NVMLError_NotFound()
        return [SimpleNamespace(pid=pid, smUtil=util, timeStamp=since + 1) for pid, util in self.samples]


def _device_watch(nvml, ours=(100,)):
    return DeviceWatch(torch.device("cuda"), lambda: ours, nvml=lambda: nvml, handle=lambda n, d: "handle")


def test_other_gpu_work_is_named_with_its_share():
    watch = _device_watch(FakeNvml(running=[100, 200], samples=[(100, 90), (200, 57), (300, 0)]))
    watch.start()
    assert (watch.isolation, watch.stop()) == ("checked", [Foreign(200, 57)])
    assert str(Foreign(200, 57)) == "pid 200 (up to 57% SM)"
    quiet = _device_watch(FakeNvml(running=[100]))
    quiet.start()
    assert quiet.stop() == []
    # a device without per-process utilisation: any other process holding a context counts
    coarse = _device_watch(FakeNvml(running=[100, 200], per_process=False))
    coarse.start()
    assert coarse.stop() == [Foreign(200, None)]


def test_without_nvml_the_row_says_unchecked():
    def missing():
        raise ModuleNotFoundError("No module named 'pynvml'")

    watch = DeviceWatch(torch.device("cuda"), nvml=missing)
    assert watch.isolation.startswith("unchecked: NVML unavailable (ModuleNotFoundError")
    watch.start()
    assert watch.stop() == []
    other_namespace = _device_watch(FakeNvml(running=[4242]))  # our own pid is not among the listed
    other_namespace.start()
    assert other_namespace.stop() == [] and "another pid namespace" in other_namespace.isolation
    assert DeviceWatch(CPU).isolation == "cpu"


def test_a_pass_beside_other_gpu_work_is_disturbed(monkeypatch):
    nvml = FakeNvml(running=[os.getpid(), 200], samples=[(200, 57)])
    watch = Watch(ScriptedHost([0.0] * 8), _device_watch(nvml, ours=(os.getpid(),)))
    measured = _sides(monkeypatch, watch)
    assert measured.clean_passes == [] and measured.isolation == "checked"
    assert measured.checks[0].causes() == ["other GPU work: pid 200 (up to 57% SM)"]
    side = Side.of(measured, compiled=False)
    assert (side.disturbed_passes, side.other_gpu_work) == (4, ["pid 200 (up to 57% SM)"])


def test_the_console_and_the_row_are_loud():
    side = Side(outlier_batches=1, warmup_stable=False, dropped_passes=2)
    row_ = Row(run_id="x", timestamp="t", status="ok", accel="tome", accelerated=side, base=Side())
    row_.disturbed, row_.isolation = row_.disturbance(), "unchecked: NVML unavailable (x)"
    lines = watch_lines(row_)
    assert lines[0] == "re-measured: passes that were not clean were measured again and left out (tome 2)"
    assert (
        lines[1]
        == "DISTURBED (post-process leaves this row out unless include_disturbed=true): tome: 1 outlier batch(es)"
    )
    assert lines[2].startswith("warm-up never steady: tome") and lines[3].startswith("other GPU work unchecked")
    assert watch_lines(Row(run_id="x", timestamp="t", status="ok", accel="tome")) == []


def test_disturbed_rows_round_trip_and_postprocess_says_why_it_leaves_rows_out(tmp_path):
    disturbed = "deepcache: 2 batch(es) on a busy host (waited up to 140% for a CPU)"
    rows = [row(speedup=0.1, disturbed=disturbed), row(speedup=2.0), row(speedup=0.9), row(accel="none", speedup=1.0)]
    upsert_summary(tmp_path / "s.csv", rows[0])
    assert read_rows(tmp_path / "s.csv")[0].disturbed == disturbed
    measured, statuses = measured_of(tmp_path, rows)
    reasons = left_out(measured, include_random=True, include_disturbed=False)
    assert {reason: [m.speedup for m in ms] for reason, ms in reasons.items()} == {
        "disturbed (include_disturbed=true admits them)": [0.1],
        "no faster than their baseline": [0.9],
        "the baseline measured against itself (a control)": [1.0],
    }
    assert "disturbed (include_disturbed=true admits them)" not in left_out(measured, True, include_disturbed=True)
    assert [s.disturbed for s in statuses] == [True, False, False, False]


def test_a_run_on_a_busy_host_says_so(tmp_path):
    """The CPU case end to end: run.py beside CPU-bound processes writes a row that says it was contended."""
    with cpu_hogs():
        result = run_cli([*FAST, "accel=deepcache", "steps=2", "max_repeats=1"], tmp_path)
    assert result.returncode == 0, result.stderr
    (written,) = read_rows(tmp_path / "outputs" / "summary.csv")
    assert written.status == "ok" and written.disturbed and "busy host" in written.disturbed
    assert written.accelerated.contended_batches + written.base.contended_batches > 0
    assert "DISTURBED" in result.stdout and written.isolation == "cpu"
    assert np.isfinite(written.speedup)


def test_measure_watches_its_own_process_by_default():
    @contextmanager
    def opened():
        yield fake_generate, None

    (measured,) = measure_sides([opened], ["a", "b"], batch_size=2, seed=0, warmup=WarmupPolicy(0), device=CPU)
    assert isinstance(measured.checks[0], PassCheck) and measured.isolation == "cpu"
    assert measured.checks[0].wait_shares[0] is not None  # read from this process's schedstat


def test_a_candidate_cannot_choose_which_of_its_passes_count():
    from accel_bench.evaluate.verdicts import watched_verdict

    # its slow pass was "not clean" (it may have made itself wait): dropping it would pass, so it stays open
    assert watched_verdict([2.0, 2.0, 2.0], [2.0, 2.0, 0.5, 2.0], 1.5, needed=3) == ("inconclusive", True)
    assert watched_verdict([2.0, 2.0, 2.0], [2.0, 2.0, 1.8, 2.0], 1.5, needed=3) == ("passed", False)
    assert watched_verdict([2.0], [2.0, 0.9, 0.8], 1.5, needed=3) == ("inconclusive", True)
    assert watched_verdict([2.0], [2.0], 1.5, needed=3) == ("inconclusive", True)  # too few clean to pass
    assert watched_verdict([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], 1.3, needed=3) == ("failed", False)
    # slow on every pass, its own passes unclean (its processes made it wait): too slow all the same
    assert watched_verdict([], [1.0, 1.1], 2.0, needed=2) == ("failed", False)
    assert watched_verdict([], [2.5, 2.6], 2.0, needed=2) == ("inconclusive", True)
    assert watched_verdict([], [], 2.0, needed=2) == ("inconclusive", True)  # every baseline pass disturbed


def test_pairs_whose_baseline_pass_was_disturbed_are_left_out_of_a_verdict():
    from accel_bench.evaluate.records import compare
    from accel_bench.evaluate.session import SideResult, SideSpec

    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    from accel_bench.evaluate.protocol import Exchange

    def side(label, latencies, checks, targets=()):
        result = SideResult(SideSpec(label, Path(f"{label}.py"), 6, targets))
        result.pass_latencies_s, result.checks, result.passes_asked = latencies, checks, 2
        result.measured = [Exchange(["a", "b"], [1, 2], images)]
        return result

    busy = PassCheck(wait_shares=[0.9])
    # the baseline's second pass ran on a busy host (slow): the candidate would look 3x there
    base = side("baseline", [1.0, 3.0, 1.0], [PassCheck(), busy, PassCheck()])
    candidate = side("candidate", [1.0, 1.0, 1.0], [PassCheck()] * 3, (1.3,))
    record = compare(base, candidate, [], 1.3, None, 25.0)
    assert record.speedups == [1.0, 1.0] and record.reason == "too_slow"
    assert record.disturbed == "baseline: busy host" and record.clean_passes == 2
