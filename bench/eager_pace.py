"""What paces an eager pipeline where the host issues the work: per measured batch, the wall time,
the main thread's CPU time, its involuntary context switches, the machine's steal time, the
garbage collector's pauses (by generation) and the host CPU's pace probed just before it (``Pace``:
the same fixed work's CPU time, which moves where a neighbour slows the core), with the collector
free to run inside the batch, with it paused there (a collection then runs after the batch, untimed),
and paused with the main thread held on one core (Linux's affinity applies to the calling thread).
CUDA's synchronize spins by default, so a wait for the GPU is CPU time too; ``--blocking-sync``
makes it sleep, and a batch's CPU time is then the host's own work.

Eager SD1.5 at batch 4 on an H100 runs at 17% of the GPU's peak, a CUDA-graph replay of the same
UNet about 1.6x faster (bench/README.md), and its passes varied by 8-16% with no watch firing while
the CUDA-graph side beside them held under 4% (issue 27). On a GPU each batch also records the SM
clock at its end (NVML, where nvidia-ml-py is installed). A collection scans the whole process's
heap (the pipeline, the metric networks, the harness), so its pause is the process's size, not the
method's; where the pauses explain the spread, a batch's timing should leave them out. The sides
are measured by ``measure`` as a run measures them, interleaved; spreads are (max - min) / median,
as a row's are (``Side.of_passes``).

    python bench/eager_pace.py pipeline=sd15 pipeline.weights=random batch_size=4 dtype=fp16 \\
        num_prompts=16 repeats=5 --out $OUT/sd15_b4.json                      # a GPU
    python bench/eager_pace.py pipeline=sd15 pipeline.weights=random batch_size=4 dtype=fp16 accel=none \\
        num_prompts=16 repeats=6 --blocking-sync --out $OUT/sd15_b4_eager_blocking.json
    python bench/eager_pace.py num_prompts=4 repeats=3 --out /tmp/pace.json  # the tiny pipeline, CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from accel_bench import accelerators, config
from accel_bench.environment import device_name, versions
from accel_bench.errors import ConfigError, exit_2_on_config_error
from accel_bench.experiment import pipeline_call, prepare_pipeline
from accel_bench.measure import WarmupPolicy, measure_sides
from accel_bench.record import Side
from accel_bench.watch.device import load_nvml, nvml_handle
from accel_bench.watch.host import machine_ns

SIDES = ("collector on", "collector paused", "paused, one core")

PACE_REPEATS = 3
INTERPRETER_ITERATIONS = 20_000  # about 1 ms of CPython 3.12 on a 2-3 GHz core
MEMORY_BYTES = 8 << 20  # past a core's L2, within or past a socket's L3

_source = bytearray(MEMORY_BYTES)
_target = bytearray(MEMORY_BYTES)


def _interpreter() -> int:
    table: dict[int, int] = {}
    total = 0
    for i in range(INTERPRETER_ITERATIONS):
        table[i & 63] = i
        total += table[i & 63] ^ (i >> 3)
    return total


def _memory() -> None:
    _target[:] = _source


def _least_cpu_s(work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(PACE_REPEATS):
        began = time.thread_time_ns()
        work()
        best = min(best, (time.thread_time_ns() - began) / 1e9)
    return best


@dataclass(frozen=True)
class Pace:
    """The host CPU's pace: CPU seconds of two fixed pieces of work, each the least of ``PACE_REPEATS``
    runs on the calling thread's CPU clock (a preemption inside one does not count: run-queue waits
    and steal are the host watch's). A neighbour on the same physical core, last-level cache or
    memory controller, or a socket's frequency budget shared with other tenants, slows a thread
    that has its CPU without any wait the guest can see: the same instructions take more CPU time.
    ``interpreter``: CPython's dispatch, dictionaries and small integers, the host work a pipeline's
    Python does; ``memory``: copying a buffer larger than a core's private caches.
    On the 2-core CI machine a buffer-copying process on the other core slowed them by 9% and 10%."""

    interpreter_s: float
    memory_s: float


def probe_pace() -> Pace:
    return Pace(_least_cpu_s(_interpreter), _least_cpu_s(_memory))


BLOCKING_SYNC = 0x04  # the CUDA runtime's cudaDeviceScheduleBlockingSync


def blocking_sync(device: torch.device) -> int:
    """Make the CUDA runtime torch loaded block, not spin, in a synchronize on ``device`` (before its
    context exists), so a wait for the GPU is not the main thread's CPU time; returns the device's flags
    as the runtime reads them back. A CPU device is refused (nothing waits on a GPU there)."""
    if device.type != "cuda":
        raise ConfigError("--blocking-sync", True, "a CUDA device (a CPU run has no GPU to wait for)")
    import ctypes

    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "libcudart" in line and "/" in line})
    if not paths:
        raise RuntimeError("torch has not loaded a CUDA runtime (libcudart) into this process")
    runtime = ctypes.CDLL(paths[0])
    index = device.index or 0
    flags = ctypes.c_uint(0)
    for call, args in (
        (runtime.cudaSetDevice, (index,)),
        (runtime.cudaSetDeviceFlags, (BLOCKING_SYNC,)),
        (runtime.cudaGetDeviceFlags, (ctypes.byref(flags),)),
    ):
        status = call(*args)
        if status != 0:
            raise RuntimeError(f"{call.__name__}{args} returned CUDA error {status}")
    if not flags.value & BLOCKING_SYNC:
        raise RuntimeError(f"the device's flags read back {flags.value:#x}, without blocking sync")
    return flags.value


def _steal_s() -> float:
    """Seconds the hypervisor ran someone else on this machine's CPUs since boot (0 where unread)."""
    times = machine_ns()
    return times[1] / 1e9 if times is not None else 0.0


class Pauses:
    """The collector's pauses, as ``gc.callbacks`` reports them: (generation, seconds) in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seen.append((int(info["generation"]), time.perf_counter() - self._began))


def sm_clock(device: torch.device) -> Callable[[], Optional[int]]:
    """The GPU's SM clock in MHz now, or None (a CPU, no NVML)."""
    if device.type != "cuda":
        return lambda: None
    try:
        nvml = load_nvml()
        handle = nvml_handle(nvml, device)
    except Exception:  # no nvidia-ml-py or no driver: the clock is not reported
        return lambda: None
    return lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))


def probed(reset: Callable[[int], None], paces: list[Pace]) -> Callable[[int], None]:
    """``reset`` (run before each batch, untimed) with the host CPU's pace probed first."""

    def before_batch(seed: int) -> None:
        paces.append(probe_pace())
        reset(seed)

    return before_batch


def observed(
    generate: Callable,
    pause: bool,
    pauses: Pauses,
    log: list[dict[str, Any]],
    clock: Callable[[], Optional[int]],
    paces: list[Pace],
) -> Callable:
    """``generate`` with its batch's host facts appended to ``log`` (the collector paused inside it
    when ``pause``; the CPU's pace as probed just before the batch)."""

    def call(batch, generators):  # type: ignore[no-untyped-def]
        seen, steal = len(pauses.seen), _steal_s()
        switches = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
        cpu = time.thread_time()
        enabled = gc.isenabled()
        if pause:
            gc.disable()
        try:
            images = generate(batch, generators)
        finally:
            if pause and enabled:
                gc.enable()
        new = pauses.seen[seen:]
        log.append(
            {
                "thread_cpu_s": time.thread_time() - cpu,
                "involuntary_switches": resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw - switches,
                "steal_s": _steal_s() - steal,
                "gc_pause_s": sum(s for _, s in new),
                "gc_by_generation": [sum(1 for g, _ in new if g == k) for k in range(3)],
                "sm_clock_mhz": clock(),
                "pace_interpreter_s": paces[-1].interpreter_s,
                "pace_memory_s": paces[-1].memory_s,
            }
        )
        return images

    return call


def summary(times: list[float], log: list[dict[str, Any]]) -> dict[str, Any]:
    batches = Side.of_passes(times)
    return {
        "batch_s": {
            "median": batches.latency_s,
            "min": batches.latency_min_s,
            "max": batches.latency_max_s,
            "spread": batches.latency_spread,
        },
        "thread_cpu_share_median": statistics.median(e["thread_cpu_s"] / t for e, t in zip(log, times)),
        "gc_pause_s_total": sum(e["gc_pause_s"] for e in log),
        "gc_pause_s_max_batch": max(e["gc_pause_s"] for e in log),
        "gc_collections": [sum(e["gc_by_generation"][k] for e in log) for k in range(3)],
        "involuntary_switches_total": sum(e["involuntary_switches"] for e in log),
        "steal_s_total": sum(e["steal_s"] for e in log),
        "sm_clock_mhz": sorted({e["sm_clock_mhz"] for e in log if e["sm_clock_mhz"] is not None}),
        **{
            f"pace_{probe}": {
                "median_s": statistics.median(e[f"pace_{probe}_s"] for e in log),
                "max_over_min": max(e[f"pace_{probe}_s"] for e in log) / min(e[f"pace_{probe}_s"] for e in log),
                "correlation_with_batch": _correlation([e[f"pace_{probe}_s"] for e in log], times),
            }
            for probe in ("interpreter", "memory")
        },
    }


def _correlation(xs: list[float], ys: list[float]) -> Optional[float]:
    """Pearson's r; None where either does not vary."""
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "overrides", nargs="*", help="run.py overrides (pipeline, batch_size, num_prompts, repeats, ...)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--blocking-sync",
        action="store_true",
        help="CUDA blocks instead of spinning while the host waits for the GPU: a batch's CPU time is the host's work",
    )
    options = parser.parse_args()
    cfg = config.compose_run_config(options.overrides)
    checked = config.check(cfg)
    device_flags = blocking_sync(torch.device(checked.device)) if options.blocking_sync else None
    prepared = prepare_pipeline(cfg, device=checked.device)
    pauses, clock = Pauses(), sm_clock(prepared.device)
    logs: dict[str, list[dict[str, Any]]] = {name: [] for name in SIDES}
    paces: list[Pace] = []
    gc.callbacks.append(pauses)
    heap = len(gc.get_objects())
    try:
        with accelerators.applied(prepared.loaded.pipe, checked.methods) as applied:
            generate = pipeline_call(applied, cfg, prepared.resolution)

            def opener(name: str):  # type: ignore[no-untyped-def]
                @contextmanager
                def opened() -> Iterator[Any]:
                    cores = os.sched_getaffinity(0)
                    if name == "paused, one core":  # the main thread only: no migration between cores
                        os.sched_setaffinity(0, {max(cores)})
                    try:
                        call = observed(generate, name != "collector on", pauses, logs[name], clock, paces)
                        yield call, probed(applied.reset, paces)
                    finally:
                        os.sched_setaffinity(0, cores)

                return opened

            sides = measure_sides(
                [opener(name) for name in SIDES],
                checked.prompts,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                warmup=WarmupPolicy(batches="auto"),
                device=prepared.device,
                repeats=int(cfg.repeats),
                interleave=True,
                count_flops=False,
                labels=list(SIDES),
            )
    finally:
        gc.callbacks.remove(pauses)
    report = {
        "command": "python bench/eager_pace.py " + " ".join(options.overrides),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": device_name(prepared.device),
        "host_cores": len(os.sched_getaffinity(0)),
        "pipeline": cfg.pipeline.name,
        "accel": cfg.accel.name,
        "batch_size": cfg.batch_size,
        "dtype": cfg.dtype,
        "versions": versions(),
        "gc_threshold": gc.get_threshold(),
        "heap_objects": heap,
        "cuda_device_flags": device_flags,  # with --blocking-sync: the runtime's flags, read back
        "warm_up_batches": {name: side.warmup_batches for name, side in zip(SIDES, sides)},
        "sides": {},
    }
    for name, side in zip(SIDES, sides):
        # the log holds the warm-up batches first, then the measured ones
        log = logs[name][len(logs[name]) - len(side.batch_times_s) :]
        report["sides"][name] = {
            "summary": summary(side.batch_times_s, log),
            "pass_latencies_s": side.repeat_latencies_s,
            "disturbed_passes": {str(i): c.causes() for i, c in enumerate(side.checks) if not c.clean},
            "batches": [{"batch_s": t, **entry} for t, entry in zip(side.batch_times_s, log)],
        }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['machine']}: {report['heap_objects']} objects in the heap, thresholds {report['gc_threshold']}")
    for name, side in report["sides"].items():
        s, passes = side["summary"], side["pass_latencies_s"]
        pass_spread = Side.of_passes(passes).latency_spread
        print(
            f"{name:>16}: batch {s['batch_s']['median']:.3f} s [{s['batch_s']['min']:.3f}-{s['batch_s']['max']:.3f}], "
            f"pass spread {pass_spread:.1%}, host CPU {s['thread_cpu_share_median']:.0%} of the wall, "
            f"collections {s['gc_collections']} pausing {s['gc_pause_s_total']:.3f} s (at most "
            f"{s['gc_pause_s_max_batch']:.3f} s a batch), {s['involuntary_switches_total']} involuntary switches, "
            f"{s['steal_s_total']:.2f} s stolen, SM clocks {s['sm_clock_mhz'] or 'unread'}"
        )
        for probe in ("interpreter", "memory"):
            p = s[f"pace_{probe}"]
            r = "undefined" if p["correlation_with_batch"] is None else f"{p['correlation_with_batch']:+.2f}"
            print(
                f"{'':>16}  {probe} probe {p['median_s'] * 1e3:.2f} ms, max/min {p['max_over_min']:.2f}, "
                f"r with the batch's time {r}"
            )


if __name__ == "__main__":
    with exit_2_on_config_error():
        main()
