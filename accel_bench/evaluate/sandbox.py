"""Where candidate code runs: a bubblewrap sandbox, and the trusted side's hold on everything in it.

    bwrap --ro-bind / / --tmpfs /tmp --unshare-all --disable-userns --cap-drop ALL ... python -m accel_bench.evaluate.serve

The file system is read-only but for a private, size-limited /tmp (HOME and caches point there);
there is no network; the code has its own PID, IPC and user namespaces, so everything it starts is
listed by namespace and ends with it; GPU device nodes are passed through. The trusted side enforces
a memory limit on the sum of the sandbox's resident memory (polled, so it works without cgroups or
privileges), freezes the sandbox (SIGSTOP to every process in it) while other sides are measured,
and kills it at the end. Without bubblewrap, nothing runs unless ``allow_unsandboxed=true``; then the
processes are found as descendants and the record says ``sandbox: none``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import ConfigError

PAGE = os.sysconf("SC_PAGE_SIZE")
GPU_NODES = ("/dev/nvidia*", "/dev/nvidia-caps/*", "/dev/dri/*")


@dataclass
class SandboxConfig:
    memory_gb: Any = "auto"  # resident memory of all its processes; auto: half the machine's
    tmp_gb: float = 8.0  # the private /tmp (a tmpfs: it counts as memory too)


@dataclass(frozen=True)
class SandboxInfo:
    """What a record says about the sandbox its numbers came from."""

    kind: str  # bwrap | none
    version: Optional[str]
    memory_gb: float
    tmp_gb: Optional[float]
    gpu_nodes: list[str] = field(default_factory=list)


def total_memory_gb() -> float:
    return os.sysconf("SC_PHYS_PAGES") * PAGE / 1e9


def _bwrap_version() -> Optional[str]:
    if shutil.which("bwrap") is None:
        return None
    out = subprocess.run(["bwrap", "--version"], capture_output=True, text=True)
    return out.stdout.split()[-1] if out.returncode == 0 and out.stdout.split() else None


def _namespaces() -> list[str]:
    return [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]


def probe(cfg: SandboxConfig, allow_unsandboxed: bool) -> SandboxInfo:
    """The sandbox this machine can make, tried once; a ConfigError where none can and it is required."""
    memory = total_memory_gb() / 2 if cfg.memory_gb == "auto" else float(cfg.memory_gb)
    if not memory > 0:
        raise ConfigError("sandbox.memory_gb", cfg.memory_gb, "auto or a number of GB > 0")
    if not cfg.tmp_gb > 0:
        raise ConfigError("sandbox.tmp_gb", cfg.tmp_gb, "a number of GB > 0")
    version = _bwrap_version()
    why = "bubblewrap (bwrap) is not installed"
    if version is not None:
        trial = subprocess.run(
            ["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", *_namespaces(), "true"],
            capture_output=True,
            text=True,
        )
        if trial.returncode == 0:
            return SandboxInfo("bwrap", version, memory, cfg.tmp_gb, sorted(p for g in GPU_NODES for p in glob.glob(g)))
        why = f"bwrap cannot make a sandbox here ({' '.join(trial.stderr.split())[:200]})"
    if not allow_unsandboxed:
        raise ConfigError("allow_unsandboxed", False, f"true to run candidate code without a sandbox: {why}")
    return SandboxInfo("none", None, memory, None)


def _bind_paths(paths: Sequence[str]) -> list[str]:
    """Read-only binds that bring back what the private /tmp hides: a venv, PYTHONPATH entries or the
    evaluated files may live under the host's /tmp."""
    args: list[str] = []
    for path in sorted({str(Path(p).resolve()) for p in paths if p and Path(p).exists()}):
        if path == "/tmp" or path.startswith("/tmp/"):
            args += ["--ro-bind", path, path]
    return args


def command(info: SandboxInfo, argv: Sequence[str], readable: Sequence[str], info_fd: int) -> list[str]:
    """The bwrap command line that runs ``argv`` in the sandbox."""
    if info.kind == "none":
        return list(argv)
    import accel_bench

    keep = [sys.prefix, sys.base_prefix, str(Path(accel_bench.__file__).resolve().parents[1]), *sys.path, *readable]
    size = str(int((info.tmp_gb or 1) * 1e9))
    args = [
        "bwrap",
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        size,
        "--tmpfs",
        "/tmp",
        "--size",
        size,
        "--tmpfs",
        "/dev/shm",
        *_bind_paths(keep),
    ]
    for node in info.gpu_nodes:
        args += ["--dev-bind", node, node]
    env = {"HOME": "/tmp", "TMPDIR": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache", "TRITON_CACHE_DIR": "/tmp/.triton"}
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, *_namespaces(), "--chdir", "/tmp", "--info-fd", str(info_fd), "--", *argv]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry))
    return tree


def _state(pid: int) -> Optional[str]:
    """A process's state letter (R, S, T stopped, Z ...), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _namespace_members() -> dict[str, list[int]]:
    """PID namespace -> its processes, from one pass over /proc."""
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found.setdefault(os.readlink(f"/proc/{entry}/ns/pid"), []).append(int(entry))
            except OSError:
                continue
    return found


class _Watchdog:
    """One thread for every live sandbox: a pass over /proc each tick, the limit checked for each
    sandbox that is not frozen (a stopped process allocates nothing). One thread, so the trusted
    side's own timing is not crowded by many."""

    PERIOD_S = 0.05

    def __init__(self) -> None:
        self._watched: list["SandboxedProcess"] = []
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def watch(self, sandbox: "SandboxedProcess") -> None:
        with self._lock:
            self._watched.append(sandbox)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()

    def forget(self, sandbox: "SandboxedProcess") -> None:
        with self._lock:
            if sandbox in self._watched:
                self._watched.remove(sandbox)

    def _run(self) -> None:
        while True:
            with self._lock:
                active = [s for s in self._watched if not s.frozen]
                if not self._watched:
                    self._thread = None
                    return
            if active:
                namespaces = _namespace_members()
                for sandbox in active:
                    sandbox.check_memory(namespaces)
            time.sleep(self.PERIOD_S)


WATCHDOG = _Watchdog()


class SandboxedProcess:
    """One candidate process and everything it starts: list, freeze, thaw, limit, kill."""

    def __init__(
        self,
        info: SandboxInfo,
        argv: Sequence[str],
        readable: Sequence[str],
        pass_fds: Sequence[int],
        env: dict[str, str],
    ):
        self.info = info
        self.out_of_memory = False
        self.peak_rss_gb = 0.0
        read_info, write_info = os.pipe()
        self.process = subprocess.Popen(
            command(info, argv, readable, write_info),
            pass_fds=[*pass_fds, write_info],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(write_info)
        self._namespace: Optional[str] = None
        self._root = self.process.pid
        if info.kind == "bwrap":
            with os.fdopen(read_info, "rb") as f:
                raw = f.read(4096)  # bwrap writes one JSON object once its child exists, then closes it
            try:
                self._root = int(json.loads(raw.decode() or "{}")["child-pid"])
                self._namespace = os.readlink(f"/proc/{self._root}/ns/pid")
            except (KeyError, ValueError, OSError):
                pass  # no child, or one already gone: the process's exit and output say why
        self.log: list[str] = []
        self.frozen = False
        self._log_reader = threading.Thread(target=self._read_log, daemon=True)
        self._log_reader.start()
        WATCHDOG.watch(self)

    def _read_log(self) -> None:
        """Keep the last lines the code printed: a message for a failed record, never a verdict."""
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            self.log = (self.log + [raw[:2000].decode(errors="replace").rstrip()])[-40:]

    def last_words(self) -> str:
        """Once it has exited: the last lines it printed."""
        self.process.wait()
        self._log_reader.join(timeout=5)
        return " | ".join(self.log[-3:])[-600:]

    def never_made(self) -> bool:
        """bwrap exited without running the command: it says why in lines of its own."""
        return (
            self.info.kind == "bwrap" and not self.alive() and any(line.startswith("bwrap: ") for line in self.log[-5:])
        )

    def members(self, namespaces: Optional[dict[str, list[int]]] = None) -> list[int]:
        """Every process of the sandbox: by PID namespace, or (unsandboxed) descendants of the root."""
        if self._namespace is not None:
            return (namespaces if namespaces is not None else _namespace_members()).get(self._namespace, [])
        tree, found, todo = _children(), [], [self._root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += tree.get(pid, [])
        return found

    def check_memory(self, namespaces: dict[str, list[int]]) -> None:
        """Kill it once its processes' resident memory, summed, passes the limit."""
        total = 0
        for pid in self.members(namespaces):
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * PAGE
            except (OSError, IndexError, ValueError):
                continue
        self.peak_rss_gb = max(self.peak_rss_gb, total / 1e9)
        if total / 1e9 > self.info.memory_gb:
            self.out_of_memory = True
            self.kill()

    def _signal_all(self, sig: int) -> None:
        seen: set[int] = set()
        while True:  # until no new process appears: a fork between listing and signalling is caught
            fresh = [pid for pid in self.members() if pid not in seen]
            if not fresh:
                return
            for pid in fresh:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            seen.update(fresh)

    def freeze(self) -> None:
        """Stop every process in it: nothing it left running competes with the side being measured.
        A stop signal lands asynchronously, so this returns once each process is seen stopped."""
        deadline = time.monotonic() + 2.0
        while True:
            self._signal_all(signal.SIGSTOP)
            running = [pid for pid in self.members() if _state(pid) not in ("T", "t", "Z", "X", None)]
            if not running or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        self.frozen = True

    def thaw(self) -> None:
        self.frozen = False
        self._signal_all(signal.SIGCONT)

    def kill(self) -> None:
        """End it and everything it started (the namespace's init takes the rest with it)."""
        WATCHDOG.forget(self)
        for pid in [self._root, *self.members()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def alive(self) -> bool:
        return self.process.poll() is None
