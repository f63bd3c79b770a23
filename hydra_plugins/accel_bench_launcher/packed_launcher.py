"""Launchers that pack sweep jobs into tasks and survive lost tasks: Slurm (``hydra/launcher=slurm``)
and local processes (``hydra/launcher=local_gpus``, one task per GPU; ``hydra/launcher=local``, CPU).

Jobs that share a pipeline go into tasks of up to ``jobs_per_task`` (``accel_bench.sweep.packing``); each
task is one submitit job that runs its jobs in one process (``accel_bench.sweep.tasks.PackedTask``). The
launcher then watches the tasks itself instead of blocking on submitit's results, so a task that
dies (a lost node, ``scancel``, the OOM killer, a time limit) costs only the jobs it had not
finished: they come back as ``lost``, the other tasks are awaited, and the sweep ends with its tally.
"""

# No "from __future__ import annotations": Hydra executes plugin modules under another name, where
# a dataclass with string annotations cannot find its own module.
import signal
import subprocess
import threading
import time
import uuid
from abc import abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

from accel_bench.errors import ConfigError, exit_2_on_config_error, is_integer
from accel_bench.sweep import slurm_queue
from accel_bench.sweep.jobs import entries, previous_ok, remove_new
from accel_bench.sweep.layout import SweepLayout
from accel_bench.sweep.limits import check_launcher_values
from accel_bench.sweep.packing import Job, Pack, pack_jobs
from accel_bench.sweep.tasks import PackedTask, TaskProgress

_OWN = ("jobs_per_task", "poll_s", "lost_after_s", "gpus", "parallel")  # ours, not submitit's


@dataclass
class PackedSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.accel_bench_launcher.packed_launcher.PackedSlurmLauncher"
    jobs_per_task: int = 6  # jobs sharing a pipeline run in one task: one process, one load, one baseline
    poll_s: float = 5.0  # how often the queue is read
    lost_after_s: float = 120.0  # a task gone from the queue without a result, where sacct cannot say why


@dataclass
class PackedLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.accel_bench_launcher.packed_launcher.PackedLocalLauncher"
    jobs_per_task: int = 6
    poll_s: float = 1.0
    gpus: Any = "auto"  # auto (every GPU this machine shows) | a list of GPU indices | [] for CPU tasks
    parallel: int = 1  # CPU tasks at a time when gpus is []
    max_num_timeout: int = 0


ConfigStore.instance().store(
    group="hydra/launcher", name="accel_bench_slurm", node=PackedSlurmConf, provider="accel_bench"
)
ConfigStore.instance().store(
    group="hydra/launcher", name="accel_bench_local", node=PackedLocalConf, provider="accel_bench"
)


@dataclass
class TaskRun:
    """One submitted task, until it ends: ``statuses`` per job of its pack, ``lost`` when it died."""

    pack: Pack
    progress_path: Path
    job: Any = None  # the submitit job
    statuses: Optional[List[str]] = None
    returns: Optional[List[JobReturn]] = None  # Hydra's, per job of the pack, once the task has ended
    lost_reason: Optional[str] = None
    left_queue_at: Optional[float] = None


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM (``timeout``, a batch system ending the sweep's own job) stops the launch as Ctrl-C
    does, so its tasks are stopped with it instead of running on unwatched."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _stderr_held() -> Iterator[None]:
    """The process's stderr (fd 2: sbatch inherits it) held back, and written out unless an exception
    ends the block (a refused submission: its message carries what sbatch said)."""
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)  # reached only when the block ended without an exception
        sys.stderr.buffer.write(held.read())
        sys.stderr.flush()


class PackedLauncher(BaseSubmititLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.own = {key: self.params.pop(key) for key in _OWN if key in self.params}

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        with exit_2_on_config_error():  # before the sweep writes or submits anything
            self.check()

    def check(self) -> None:
        check_launcher_values(self.own, ("jobs_per_task", "poll_s"))

    def executor(self) -> Any:
        """submitit's executor for our parameters, converted as hydra-submitit-launcher converts them."""
        import submitit

        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in base else f"{self._EXECUTOR}_{key}": value
                for key, value in self.params.items()
                if key not in ("submitit_folder", "max_num_timeout")
            }
        )
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs = [Job(initial_job_idx + offset, tuple(overrides)) for offset, overrides in enumerate(job_overrides)]
        statuses = {job.num: "skipped" for job in self.already_ok(jobs, sweep_dir)}
        packs = pack_jobs([job for job in jobs if job.num not in statuses], self.own["jobs_per_task"])
        launch = f"{initial_job_idx:05d}-{uuid.uuid4().hex[:8]}"  # a resumed sweep starts from fresh progress
        runs = [TaskRun(pack, SweepLayout(sweep_dir).task_progress(launch, pack.index)) for pack in packs]
        skipped = f"{len(statuses)} skipped (an ok result of the same config), " if statuses else ""
        print(
            f"[sweep] {len(jobs)} jobs: {skipped}{len(jobs) - len(statuses)} in {len(runs)} {self._EXECUTOR} tasks "
            f"of up to {self.own['jobs_per_task']} jobs sharing a pipeline",
            flush=True,
        )
        task = PackedTask(self.hydra_context, self.config, self.task_function)
        try:
            if runs:
                with _sigterm_as_interrupt():
                    self.run_tasks(task, runs, Singleton.get_state())
        except KeyboardInterrupt:
            started = [run for run in runs if run.job is not None and run.statuses is None]
            print(f"[sweep] interrupted: stopping {len(started)} running tasks", flush=True)
            self.stop(started)
            raise
        returns = {
            job.num: JobReturn(overrides=list(job.overrides), status=JobStatus.COMPLETED, _return_value=status)
            for job, status in ((job, statuses[job.num]) for job in jobs if job.num in statuses)
        }
        for run in runs:
            returns.update((job.num, returned) for job, returned in zip(run.pack.jobs, run.returns))
        return [returns[job.num] for job in jobs]

    def already_ok(self, jobs: List[Job], sweep_dir: Path) -> List[Job]:
        """On a resumed sweep (it has a summary), the jobs with an ok result of the same config: no
        task is queued for them. A fresh sweep composes nothing here."""
        from accel_bench.experiment import run_id  # torch and diffusers: not at Hydra's plugin scan

        if not SweepLayout(sweep_dir).summary.exists():
            return []
        found = []
        for job in jobs:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(job.overrides))
            with open_dict(config):
                config.hydra.job.num = job.num
                run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
                del config["hydra"]  # the job's own config, as Hydra hands it to the job
            if previous_ok(run_dir, run_id(config)):
                found.append(job)
        return found

    def stop(self, runs: List[TaskRun]) -> None:
        """Cancel the tasks of an interrupted launch."""
        for run in runs:
            run.job.cancel(check=False)

    @abstractmethod
    def run_tasks(self, task: PackedTask, runs: List[TaskRun], state: Dict[type, Singleton]) -> None:
        """Submit every run's task and return once each has ended (``finish``)."""

    def finish(self, run: TaskRun, ended_as: str) -> None:
        """The task is over: its jobs' statuses from its result, or, where it has none, from its
        progress file, the jobs it did not finish counted as lost."""
        from submitit.core.utils import pickle_load

        if run.job.paths.result_pickle.exists():
            outcome, value = pickle_load(run.job.paths.result_pickle)
            if outcome == "success":
                run.returns = list(value)
                for returned in run.returns:
                    if returned.status != JobStatus.COMPLETED:  # it raised past the task function: logged by the task
                        returned.status, returned._return_value = JobStatus.COMPLETED, "crashed"
                run.statuses = [str(returned._return_value) for returned in run.returns]
                return
            ended_as = f"the task raised: {str(value).strip().splitlines()[-1]}"
        progress = TaskProgress.read(run.progress_path, run.pack)
        run.statuses = [progress.done.get(job.num, "lost") for job in run.pack.jobs]
        run.returns = [
            JobReturn(overrides=list(job.overrides), status=JobStatus.COMPLETED, _return_value=status)
            for job, status in zip(run.pack.jobs, run.statuses)
        ]
        run.lost_reason = f"task {run.pack.index} ({self._EXECUTOR} {run.job.job_id}"
        run.lost_reason += f" on {progress.hosts[-1]}): {ended_as}" if progress.hosts else f"): {ended_as}"
        lost = [str(job.num) for job, status in zip(run.pack.jobs, run.statuses) if status == "lost"]
        print(
            f"[sweep] {run.lost_reason}; lost jobs {', '.join(lost) or 'none'}"
            f" ({len(run.pack.jobs) - len(lost)} of {len(run.pack.jobs)} recorded)",
            flush=True,
        )


class PackedSlurmLauncher(PackedLauncher):
    """Submits one job array, then reads the queue every ``poll_s`` until every task has ended."""

    _EXECUTOR = "slurm"

    # submitit's resource fields that sbatch would refuse in a traceback
    _RESOURCES = (
        "timeout_min",
        "nodes",
        "tasks_per_node",
        "cpus_per_task",
        "gpus_per_node",
        "array_parallelism",
        "max_num_timeout",
        "mem_gb",
    )

    def check(self) -> None:
        super().check()
        check_launcher_values(self.own, ("lost_after_s",))
        check_launcher_values(self.params, self._RESOURCES)

    def run_tasks(self, task: PackedTask, runs: List[TaskRun], state: Dict[type, Singleton]) -> None:
        from submitit.core.utils import FailedJobError

        folder = Path(self.params["submitit_folder"])
        folder = folder.parent if "%j" in folder.name else folder  # where submitit writes before it has a job id
        before = entries(folder)
        try:
            with _stderr_held():
                jobs = self.executor().map_array(
                    task, [run.pack for run in runs], [str(run.progress_path) for run in runs], [state] * len(runs)
                )
        except FailedJobError as error:  # sbatch refused the array: nothing was submitted
            remove_new(folder, before)  # the pickled task and sbatch script of the refused submission
            message = " ".join(str(error).split())
            said = {"partition": "partition", "account": "account", "qos": "qos", "feature": "constraint"}
            key = next((key for word, key in said.items() if word in message.lower()), None)
            with exit_2_on_config_error():
                raise ConfigError(
                    f"hydra.launcher.{key}" if key else "hydra.launcher",
                    self.params.get(key) if key else self._EXECUTOR,
                    f"what this cluster's sbatch accepts ({message}); nothing was submitted",
                ) from None
        for run, job in zip(runs, jobs):
            run.job = job
        pending = list(runs)
        while pending:
            time.sleep(self.own["poll_s"])
            ids = [run.job.job_id for run in pending]
            queued = slurm_queue.queued(ids)
            ended = slurm_queue.ended_states(ids) if queued is not None and set(ids) - queued else {}
            for run in list(pending):
                if run.job.paths.result_pickle.exists():
                    self.finish(run, "done")
                elif queued is None or run.job.job_id in queued:  # no answer, or waiting or running
                    run.left_queue_at = None
                    continue
                else:
                    now = time.monotonic()
                    run.left_queue_at = run.left_queue_at or now
                    final = (ended or {}).get(run.job.job_id)
                    if final and final != "COMPLETED":
                        self.finish(run, f"ended {final}")
                    elif now - run.left_queue_at >= self.own["lost_after_s"]:
                        self.finish(
                            run,
                            f"ended {final} without a result"
                            if final
                            else f"left the queue without a result (no accounting; waited {self.own['lost_after_s']:.0f} s)",
                        )
                    else:
                        continue
                pending.remove(run)


class PackedLocalLauncher(PackedLauncher):
    """Local processes: one task per GPU at a time, each seeing only its own GPU
    (``CUDA_VISIBLE_DEVICES``); with ``gpus=[]``, ``parallel`` CPU tasks at a time."""

    _EXECUTOR = "local"
    _STOP_GRACE_S = 10.0

    def check(self) -> None:
        super().check()
        gpus = self.own["gpus"]
        if gpus == "auto":
            import torch

            gpus = list(range(torch.cuda.device_count()))
            if not gpus:
                raise ConfigError(
                    "hydra.launcher.gpus",
                    "auto",
                    "a list of GPU indices: this machine shows no CUDA GPU (hydra/launcher=local runs CPU tasks)",
                )
        if not isinstance(gpus, list) or not all(is_integer(g) and g >= 0 for g in gpus) or len(set(gpus)) != len(gpus):
            raise ConfigError(
                "hydra.launcher.gpus", gpus, "auto or a list of distinct GPU indices, e.g. [0,1] ([] for CPU tasks)"
            )
        check_launcher_values(self.own, ("parallel",))
        self.own["gpus"] = gpus

    def executor(self) -> Any:
        """submitit's own LocalExecutor: it alone takes ``visible_gpus``, set per task below."""
        import submitit

        executor = submitit.LocalExecutor(
            folder=self.params["submitit_folder"], max_num_timeout=self.params["max_num_timeout"]
        )
        executor.update_parameters(
            **{key: self.params[key] for key in ("timeout_min", "tasks_per_node", "stderr_to_stdout")}
        )
        return executor

    def stop(self, runs: List[TaskRun]) -> None:
        """Our children: each task's controller gets SIGINT (submitit's controller then interrupts and
        kills its task process) and is killed if it has not ended within ``_STOP_GRACE_S``."""
        super().stop(runs)
        deadline = time.monotonic() + self._STOP_GRACE_S
        for run in runs:
            process = run.job._process
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def run_tasks(self, task: PackedTask, runs: List[TaskRun], state: Dict[type, Singleton]) -> None:
        executor = self.executor()
        gpus = self.own["gpus"]
        slots: List[Optional[int]] = list(gpus) if gpus else [None] * self.own["parallel"]
        waiting, running = list(runs), {}
        while waiting or running:
            for slot in [s for s in range(len(slots)) if s not in running][: len(waiting)]:
                gpu = slots[slot]
                executor.update_parameters(
                    gpus_per_node=0 if gpu is None else 1, visible_gpus=() if gpu is None else (gpu,)
                )
                run = waiting.pop(0)
                run.job = executor.submit(task, run.pack, str(run.progress_path), state)
                running[slot] = run
                print(
                    f"[sweep] task {run.pack.index} ({len(run.pack.jobs)} jobs) on "
                    f"{'CPU' if gpu is None else f'GPU {gpu}'}",
                    flush=True,
                )
            time.sleep(self.own["poll_s"])
            for slot, run in list(running.items()):
                code = run.job._process.poll()  # submitit's LocalJob keeps its Popen
                if code is not None:
                    self.finish(
                        run, f"process killed by signal {-code}" if code < 0 else f"process exited with code {code}"
                    )
                    del running[slot]
