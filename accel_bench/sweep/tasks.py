"""A packed task: one process runs its jobs in turn, and after a requeue resumes at the first job
it had not finished.

The task records each finished job in its progress file (``TaskProgress``) as soon as the job's
row is written. The launcher reads the same file when a task dies without a result (a lost node,
``scancel``, the OOM killer, a time limit): the jobs it lists are recorded, the others are lost.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import cloudpickle

from .packing import Pack


@dataclass
class TaskProgress:
    """A task's progress file (``SweepLayout.task_progress``): which jobs of the pack are done."""

    path: Path
    jobs: list[int]
    done: dict[int, str] = field(default_factory=dict)  # job number -> status
    starts: int = 0  # 2 or more: the task was requeued and resumed
    hosts: list[str] = field(default_factory=list)  # per start
    job_id: Optional[str] = None  # the scheduler's id of the task (Slurm: 12 or 12_3)
    pid: Optional[int] = None  # the process running the jobs, latest start

    @classmethod
    def read(cls, path: Path, pack: Pack) -> "TaskProgress":
        path = Path(path)
        if not path.exists():
            return cls(path, [job.num for job in pack.jobs])
        record = json.loads(path.read_text())
        return cls(
            path,
            record["jobs"],
            {int(k): v for k, v in record["done"].items()},
            record["starts"],
            record["hosts"],
            record["job_id"],
            record["pid"],
        )

    def write(self) -> None:
        record = {
            "jobs": self.jobs,
            "done": {str(k): v for k, v in sorted(self.done.items())},
            "starts": self.starts,
            "hosts": self.hosts,
            "job_id": self.job_id,
            "pid": self.pid,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(self.path)


def _use_allocated_cpus() -> None:
    """On Slurm, as many torch threads as CPUs the task was given: tasks sharing a node must not
    each start one thread per core of the node (they would slow each other down several times)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))


class PackedTask:
    """The callable submitit pickles into each task; it runs the pack's jobs through Hydra's
    ``run_job``, so every job gets its own run dir, config and logging, as with one job per task."""

    def __init__(self, hydra_context: Any, config: Any, task_function: Callable[..., Any]) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.task_function = task_function
        self.requeued = False  # set by ``checkpoint``, inside submitit's preemption signal handler
        # pickled once, here: submitit pickles the task again inside its preemption signal handler, which
        # can run while a job mutates Hydra's configs, and pickling those then corrupts them mid-change
        self._pickled = cloudpickle.dumps((hydra_context, config, task_function))

    def __getstate__(self) -> bytes:
        return self._pickled

    def __setstate__(self, pickled: bytes) -> None:
        self.__init__(*cloudpickle.loads(pickled))

    def __call__(self, pack: Pack, progress_path: str, singleton_state: dict) -> list[Any]:
        """Hydra's JobReturn of each job of the pack (a job finished by an earlier start of the task
        comes back with its recorded status as its return value)."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
        from omegaconf import open_dict

        Singleton.set_state(copy.deepcopy(singleton_state))  # the arguments stay as submitted, for a requeue
        setup_globals()
        _use_allocated_cpus()
        progress = TaskProgress.read(Path(progress_path), pack)
        progress.starts += 1
        progress.hosts.append(socket.gethostname())
        progress.job_id, progress.pid = submitit.JobEnvironment().job_id, os.getpid()
        progress.write()
        if progress.done:
            print(
                f"[sweep] task {pack.index} resumed (start {progress.starts}): "
                f"{len(progress.done)} of {len(pack.jobs)} jobs already done",
                flush=True,
            )
        returns = {}
        for job in pack.jobs:
            if job.num in progress.done:
                returns[job.num] = JobReturn(
                    overrides=list(job.overrides), status=JobStatus.COMPLETED, _return_value=progress.done[job.num]
                )
                continue
            with self._requeue_wins():
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(job.overrides))
                with open_dict(sweep_config.hydra.job):
                    sweep_config.hydra.job.id = submitit.JobEnvironment().job_id
                    sweep_config.hydra.job.num = job.num
                returned = run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            if returned.status == JobStatus.COMPLETED:
                status = str(returned.return_value)
            else:  # the job raised past the sweep job, which turns every run error into a row
                status = "crashed"
                print(
                    f"[sweep] job {job.num} crashed: {type(returned._return_value).__name__}: {returned._return_value}",
                    file=sys.stderr,
                    flush=True,
                )
            progress.done[job.num] = status
            progress.write()
            returns[job.num] = returned
        return [returns[job.num] for job in pack.jobs]

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on preemption or a time limit: requeue the same task, which resumes
        from its progress file."""
        import submitit

        self.requeued = True
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    @contextmanager
    def _requeue_wins(self) -> Iterator[None]:
        """Once requeued, the process ends with SystemExit and records nothing more. submitit raises
        SystemExit from its signal handler wherever the job was; cleanup there (OmegaConf's flag reset on
        a half-built list, a job's own handler) can raise another error in its place, which submitit
        recorded as the task's failure (its jobs then reported lost while the requeued task ran them),
        or the job came back failed and was recorded done as crashed."""
        try:
            yield
        except BaseException as error:
            if self.requeued and not isinstance(error, SystemExit):
                raise SystemExit(-1) from error
            raise
        if self.requeued:
            raise SystemExit(-1)
