"""The trusted side's conversation with one code file's process: a batch out, its images back.

Messages are a length-prefixed JSON header and, for images, raw uint8 bytes (count, H, W, 3). The
trusted side sends each batch's prompts, per-image seeds, steps and resolution; ``measure`` times
the whole round trip, images included, so the candidate's process has no clock to tamper with. Its
replies are checked for size before they are read, and nothing else it writes, prints or returns is
trusted: a process that breaks the protocol, dies or runs past its time is stopped with a reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch

from ..measure import SideStopped
from .sandbox import SandboxedProcess, SandboxInfo
from .wire import receive, send


@dataclass
class Exchange:
    """One batch as the trusted side sent it and what came back."""

    prompts: list[str]
    seeds: list[int]
    images: np.ndarray  # uint8 (count, H, W, 3)


@dataclass
class Failure:
    reason: str  # one of verdicts.REASONS: sandbox, missing, crashed, timed_out, out_of_memory, wrong_images
    message: str


@dataclass
class CodeProcess:
    """A code file's sandboxed process, seen from the trusted side."""

    label: str
    sandbox: SandboxedProcess
    to_code: int
    from_code: int
    timeout_s: float
    resolution: int
    transcript: list[Exchange] = field(default_factory=list)
    failure: Optional[Failure] = None
    _loading_deadline: float = 0.0

    @classmethod
    def launch(
        cls, label: str, info: SandboxInfo, request: dict[str, Any], readable: list[str], timeout_s: float
    ) -> "CodeProcess":
        """Start ``python -m accel_bench.evaluate.serve`` on the file and ask it to load; ``ready`` waits."""
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "accel_bench.evaluate.serve", str(requests_r), str(replies_w)]
        sandbox = SandboxedProcess(info, argv, readable, [requests_r, replies_w], env)
        os.close(requests_r)
        os.close(replies_w)
        side = cls(label, sandbox, requests_w, replies_r, timeout_s, request["resolution"])
        side._loading_deadline = time.monotonic() + timeout_s
        try:
            send(side.to_code, {"op": "load", **request})
        except OSError as error:
            side._settle(error, "loading")
        return side

    def ready(self) -> bool:
        """Wait until the file's pipeline is loaded (files load in parallel); False with a failure."""
        try:
            header, _ = receive(self.from_code, self._loading_deadline)
            if header.get("op") != "ready":
                self._stop("crashed", f"loading failed: {str(header.get('error'))[:500]}")
        except SideStopped:
            pass
        except (TimeoutError, EOFError, ValueError, OSError) as error:
            self._settle(error, "loading")
        return self.failure is None

    def _settle(self, error: BaseException, during: str) -> None:
        try:
            self._fail(error, during)
        except SideStopped:
            pass

    def _stop(self, reason: str, message: str) -> None:
        if self.failure is None:
            self.failure = Failure(reason, message)
        self.close()
        raise SideStopped(message)

    def _fail(self, error: BaseException, during: str) -> None:
        if isinstance(error, (EOFError, BrokenPipeError)):  # its end of a pipe closed: it is exiting, or has
            try:
                self.sandbox.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if not self.sandbox.alive():
            self.sandbox.last_words()  # all of its output read
            if self.sandbox.never_made():
                self._stop("sandbox", f"bwrap could not make the sandbox: {self.sandbox.last_words()}")
        if self.sandbox.out_of_memory:
            self._stop("out_of_memory", f"went over the sandbox's {self.sandbox.info.memory_gb:.1f} GB while {during}")
        if isinstance(error, TimeoutError):
            self._stop("timed_out", f"timed out after {self.timeout_s:g} s while {during}")
        if isinstance(error, ValueError):
            self._stop("crashed", f"broke the protocol while {during}: {error}")
        code = self.sandbox.process.poll()
        tail = " | ".join(self.sandbox.log[-3:])[-600:]
        self._stop("crashed", f"the process ended (exit code {code}) while {during}{': ' + tail if tail else ''}")

    def _round_trip(self, request: dict[str, Any], count: int, during: str) -> np.ndarray:
        """Send one request, read back exactly ``count`` images of the task's size, or stop the side."""
        if self.failure is not None:
            raise SideStopped(self.failure.message)
        shape = (count, self.resolution, self.resolution, 3)
        try:
            send(self.to_code, request)
            header, payload = receive(
                self.from_code, time.monotonic() + self.timeout_s, max_payload=int(np.prod(shape))
            )
        except (TimeoutError, EOFError, ValueError, OSError) as error:
            self._fail(error, during)
        if "error" in header:
            self._stop("crashed", f"{during} failed: {str(header['error'])[:500]}")
        if header.get("shape") != list(shape) or len(payload) != int(np.prod(shape)):
            self._stop(
                "wrong_images",
                f"returned {len(payload)} bytes as images of shape {header.get('shape')} "
                f"while {during} of {shape[0]} at {shape[1]}x{shape[2]} RGB",
            )
        return np.frombuffer(payload, dtype=np.uint8).reshape(shape)

    def generate(self, prompts: list[str], generators: list[torch.Generator]) -> np.ndarray:
        """``measure``'s Generate: one round trip. Inside the timed call, so it does only what every
        side needs alike: send, read the bytes, check their size."""
        seeds = [g.initial_seed() for g in generators]
        images = self._round_trip(
            {"op": "generate", "prompts": prompts, "seeds": seeds}, len(prompts), "generating a batch"
        )
        self.transcript.append(Exchange(list(prompts), seeds, images))
        return images

    def echo(self, prompts: list[str], generators: list[torch.Generator]) -> np.ndarray:
        """The transfer alone: the process sends back a batch's worth of bytes, runs nothing."""
        shape = [len(prompts), self.resolution, self.resolution, 3]
        return self._round_trip({"op": "echo", "shape": shape}, len(prompts), "echoing a batch")

    @contextmanager
    def turn(self) -> Iterator[tuple[Any, None]]:
        """``measure``'s side opener: thawed for its passes, frozen while the others run."""
        if self.failure is None:
            self.sandbox.thaw()
        try:
            yield self.generate, None
        finally:
            if self.failure is None:
                self.sandbox.freeze()

    def close(self) -> None:
        self.sandbox.kill()
        for fd in (self.to_code, self.from_code):
            try:
                os.close(fd)
            except OSError:
                pass
        self.to_code = self.from_code = -1
