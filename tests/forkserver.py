"""A fork server for the suite's command lines (``python run.py ...``, ``python -m accel_bench.X ...``).

Most of a tiny run's subprocess is the interpreter importing torch, diffusers, transformers, Hydra
and the metrics (7-8 s on 2 cores; 3 s for a bad-input run that stops at the config). The server is
a fresh interpreter that imports them once and computes nothing; each command is a child forked
from it: its own process, pid, cwd, environment, file descriptors and exit status, running the same
entry point with the same ``sys.argv`` as ``python`` would, and ending the way the interpreter ends
(non-daemon threads joined, ``atexit`` run, streams flushed). Commands that change what is imported
(``PYTHONPATH``, plug-in folders) keep a plain ``subprocess.run``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional, Sequence

# what a run, a sweep, post-process and the evaluator's trusted side import; nothing here runs. Not
# open_clip: children forked after importing it measured with their threads waiting 25-70% of each
# batch for a CPU (the host watch said so; a fresh process: 1%), so each run imports it itself.
PRELOAD = (
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "hydra",
    "omegaconf",
    "lpips",
    "accel_bench.cli",
    "accel_bench.experiment",
    "accel_bench.postprocess",
    "accel_bench.evaluate.evaluator",
)


class ForkServer:
    """The client: one server per test session, started on first use, one command at a time."""

    def __init__(self) -> None:
        self.process: Optional[subprocess.Popen] = None
        self.pending = b""  # what the server wrote past the last line read
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # the imports' own warnings, printed once here
                bufsize=0,
            )
            self.pending = b""
            ready = self._answer(None)
            if ready != "ready":
                raise RuntimeError(f"the fork server did not start: {ready!r}")
        return self.process

    def _answer(self, timeout: Optional[float]) -> Optional[str]:
        """The server's next line; None if none came within ``timeout`` seconds."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the fork server ended")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def run(
        self, argv: Sequence[str], cwd: Path, timeout: float, env: Optional[dict] = None
    ) -> subprocess.CompletedProcess:
        """``subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout)``; ``env`` only for variables read at run time (``PATH``), never at import."""
        command = [sys.executable, *argv]
        with self.lock, tempfile.TemporaryDirectory(prefix="accel_bench_fork_") as captured:
            out, err = Path(captured) / "stdout", Path(captured) / "stderr"
            server = self._start()
            request = {
                "argv": list(argv),
                "cwd": str(cwd),
                "env": dict(os.environ if env is None else env),
                "stdout": str(out),
                "stderr": str(err),
            }
            server.stdin.write((json.dumps(request) + "\n").encode())
            pid = json.loads(self._answer(None))["pid"]
            answer = self._answer(timeout)
            if answer is None:
                os.kill(pid, signal.SIGKILL)
                self._answer(None)
            output, errors = out.read_text(), err.read_text()
        if answer is None:
            raise subprocess.TimeoutExpired(command, timeout, output, errors)
        return subprocess.CompletedProcess(command, json.loads(answer)["returncode"], output, errors)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


def _exit_code(error: SystemExit) -> int:
    """What the interpreter makes of ``sys.exit(code)``."""
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code
    print(error.code, file=sys.stderr)
    return 1


def _child(request: dict) -> None:
    """Become ``python *argv`` in ``cwd`` with ``env``; never returns."""
    import atexit
    import runpy

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.close(null)
    argv = request["argv"]
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]  # run_module puts the module's file first, as python -m does
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as error:
        code = _exit_code(error)
    except BaseException as error:
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__, "<frozen runpy>"):
            tb = tb.tb_next  # the traceback python prints: from the entry point on
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        code = 1
    try:
        threading._shutdown()  # the interpreter's own end: non-daemon threads joined, then atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve() -> None:
    """Import ``PRELOAD``, then for each request line fork a child and answer its pid and exit code."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
