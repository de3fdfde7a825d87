"""Where a study's runs execute: in this process, one after another (the default), or as tasks on a Ray cluster.

Both executors run the same function, :func:`run_job`, and hand back the same :class:`Outcome`; the study (and the
hyper-parameter search) submit jobs and record outcomes without knowing which executor ran them. With
``processes_per_run`` > 1 a job trains data-parallel in processes started with ``accelerate launch`` (worker.py).

Storage contract (Ray): each run writes its run directory under the study's results directory, which must be on
storage every node can reach (NFS, a shared volume) — that is what lets a retried run resume from the checkpoint its
dead predecessor left. The run's records (metrics, resources, run.json) travel back to the driver in the task's
result, and only the driver writes the SQLite index, once per run, so a retried task can never record a run twice.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import socket
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tuneoff.config import RunConfig
from tuneoff.core.errors import Stopped, TuneoffError
from tuneoff.core.files import read_json
from tuneoff.core.logs import RUN_LOG
from tuneoff.training import stop
from tuneoff.training.launcher import launch_command, run_launched

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One run of a study: its id and resolved config (``output_dir`` is the study's runs directory)."""

    run_id: str
    config: RunConfig
    # Called where the run trains (here, a Ray worker, each process of a multi-process run) to make the train loop's
    # on_evaluate: a search's pruner, picklable. Executors call it; they know nothing of what it reports to.
    on_evaluate: Callable[[], Callable[[int, dict], None]] | None = None
    trial: bool = False  # a tuning or search trial: it chooses on validation, and its progress line shows only that


@dataclass
class Outcome:
    run_id: str
    status: str  # done | failed | pruned | stopped (asked to by a signal: its checkpoint kept, --resume continues it)
    run_dir: str | None = None
    metrics: dict | None = None
    resources: dict | None = None
    run_info: dict | None = None
    error: str | None = None
    seconds: float = 0.0
    host: str = field(default_factory=socket.gethostname)
    found_on_disk: bool = False


def _read_finished(run_id: str, run_dir: Path, seconds: float = 0.0, found: bool = False) -> Outcome:
    return Outcome(
        run_id,
        "done",
        str(run_dir),
        read_json(run_dir / "metrics.json"),
        read_json(run_dir / "resources.json"),
        read_json(run_dir / "run.json"),
        seconds=seconds,
        found_on_disk=found,
    )


class RunProcessesDied(RuntimeError):
    """The processes of a multi-process run died without reporting (killed, preempted): Ray retries the task."""


def run_job(job: Job, progress: bool = False, processes: int = 1) -> Outcome:
    """Train one run (resuming its checkpoint if an earlier attempt left one) and describe how it ended.

    Bad input and library errors come back as a ``failed`` outcome (retrying would fail again); only a dead
    process (a crash, a preempted node) makes Ray retry the task, which then resumes from the last checkpoint.
    With ``processes`` > 1 the run trains data-parallel in that many processes started with ``accelerate launch``
    (see worker.py); they run this same function."""
    from tuneoff.training.retry import train_with_oom_retry

    run_dir = Path(job.config.output_dir) / job.run_id
    if (run_dir / "run.json").is_file():  # finished by an earlier attempt that died before reporting back
        return _read_finished(job.run_id, run_dir, found=True)
    if processes > 1:
        return _run_in_processes(job, processes)
    t0 = time.perf_counter()
    on_evaluate = job.on_evaluate() if job.on_evaluate is not None else None
    try:
        result = train_with_oom_retry(
            job.config, progress=progress, run_id=job.run_id, resume=True, on_evaluate=on_evaluate
        )
    except stop.RunStopped as exc:
        return Outcome(job.run_id, "stopped", error=str(exc), seconds=time.perf_counter() - t0)
    except TuneoffError as exc:
        return Outcome(job.run_id, "failed", error=str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - a pruned trial, a bug or a library error: recorded, the study goes on
        if type(exc).__name__ == "TrialPruned":  # its checkpoint will never be resumed
            shutil.rmtree(run_dir.parent / f".{job.run_id}.tmp", ignore_errors=True)
            return Outcome(
                job.run_id,
                "pruned",
                metrics=getattr(exc, "metrics", None),
                error=str(exc),
                seconds=time.perf_counter() - t0,
            )
        return Outcome(
            job.run_id, "failed", error="".join(traceback.format_exception(exc)), seconds=time.perf_counter() - t0
        )
    return _read_finished(job.run_id, result.run_dir, time.perf_counter() - t0)


def _run_in_processes(job: Job, processes: int) -> Outcome:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tuneoff-job-") as tmp:
        job_file, outcome_file = Path(tmp) / "job.pkl", Path(tmp) / "outcome.pkl"
        job_file.write_bytes(pickle.dumps(job))
        code, output, _ = run_launched(
            launch_command(processes, [str(job_file), str(outcome_file)], module="tuneoff.study.worker"), capture=True
        )
        outcome = pickle.loads(outcome_file.read_bytes()) if outcome_file.is_file() else None
    # A process killed by a signal makes the launcher exit non-zero; the survivors then fail in their next collective
    # ("connection reset by peer") and process 0 may report that failure. Only a clean exit (or a finished run) is
    # the run's own outcome; anything else is a dead process, retried like a dead worker.
    if outcome is not None and (code == 0 or outcome.status in ("done", "stopped")):
        outcome.seconds = time.perf_counter() - t0
        return outcome
    tail = "\n".join(output.strip().splitlines()[-15:])
    log.warning(f"    {job.run_id}: its {processes} processes died (exit code {code})")
    log_file = Path(job.config.output_dir) / f".{job.run_id}.tmp" / RUN_LOG
    raise RunProcessesDied(
        f"the {processes} processes of run {job.run_id} died without reporting (exit code "
        f"{code}); every process's records are in {log_file}; last output:\n{tail}"
    )


class LocalExecutor:
    """Runs jobs in this process, one at a time, in submission order (``study.packing`` runs several at once)."""

    name = "local"
    slots = 1

    def __init__(self, progress: bool = False, processes_per_run: int = 1, threads: int | None = None):
        self.progress, self.processes = progress, processes_per_run
        self.queue: deque[Job] = deque()
        if threads:
            import torch

            torch.set_num_threads(threads)

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    @property
    def pending(self) -> int:
        return len(self.queue)

    def next_done(self) -> tuple[Job, Outcome]:
        job = self.queue.popleft()
        try:
            return job, run_job(job, self.progress, self.processes)
        except RunProcessesDied as exc:  # no retries here: recorded as failed, `--resume` continues its checkpoint
            return job, Outcome(job.run_id, "failed", error=str(exc))

    def stop(self) -> None:
        """The run in flight here stops itself (its process got the signal); nothing queued starts."""
        self.queue.clear()

    def close(self) -> None:
        pass


class RayExecutor:
    """Each job is a Ray task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs; Ray places it on a node
    that has them. A task whose worker dies is retried up to ``max_retries`` times (it resumes from its
    checkpoint); after that the run is recorded as failed and the study goes on."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float | None = None,
        max_retries: int = 3,
        processes_per_run: int = 1,
    ):
        if processes_per_run < 1:
            raise TuneoffError(f"--processes-per-run {processes_per_run}: must be at least 1.")
        try:
            import ray
        except ImportError:
            raise TuneoffError("--executor ray needs Ray: pip install 'tuneoff[ray]'.") from None
        self.ray = ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not ray.is_initialized():
            try:
                # No address means a cluster of our own ("local"), not whatever /tmp/ray last recorded: a stale or
                # foreign cluster there would be joined silently. RAY_ADDRESS (set by `ray job submit`) still counts.
                own = None if os.environ.get("RAY_ADDRESS") else "local"
                ray.init(address=address or own, log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise TuneoffError(
                    f"Cannot connect to the Ray cluster at {address or 'a new local cluster'}: {exc}. "
                    "Start one with `ray start --head`, or pass --address auto / ray://host:10001."
                ) from exc
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        cpus_per_run, gpus_per_run, self.slots = task_resources(nodes, cpus_per_run, gpus_per_run, processes_per_run)
        # A dead worker is retried by Ray; so are a multi-process run's processes dying under a live worker.
        self.task = ray.remote(_remote_run_job).options(
            num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries, retry_exceptions=[RunProcessesDied]
        )
        self.processes = processes_per_run
        self.max_retries = max_retries
        self.inflight: dict = {}
        total_cpus, total_gpus = sum(n.get("CPU", 0) for n in nodes), sum(n.get("GPU", 0) for n in nodes)
        log.info(
            f"ray: {len(nodes)} node(s), {total_cpus:g} CPUs, {total_gpus:g} GPUs; each run asks for {cpus_per_run:g} CPUs "
            f"and {gpus_per_run:g} GPUs ({processes_per_run} process(es)), {self.slots} at a time; up to {max_retries} retries"
        )

    def submit(self, job: Job) -> None:
        self.inflight[self.task.remote(job, self.processes)] = job

    @property
    def pending(self) -> int:
        return len(self.inflight)

    def next_done(self) -> tuple[Job, Outcome]:
        [ref], _ = self.ray.wait(list(self.inflight), num_returns=1)
        job = self.inflight.pop(ref)
        try:
            return job, self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # the worker died on every attempt
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return job, Outcome(
                job.run_id, "failed", error=f"Ray task failed after {self.max_retries} retries: {first}"
            )

    def stop(self) -> None:
        """Ray interrupts each run in flight (KeyboardInterrupt in its task): it resumes from its last checkpoint."""
        for ref in self.inflight:
            self.ray.cancel(ref, force=False)

    def close(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref, force=True)
        self.inflight.clear()


def task_resources(nodes: list[dict], cpus: float, gpus: float | None, processes: int) -> tuple[float, float, int]:
    """What each run's task asks for, and how many runs the cluster holds at once, from each live node's resources.

    A run's processes share one machine (one ``accelerate launch``), one GPU each where there are GPUs, so the
    check is against single nodes: 4 nodes with 1 GPU each cannot place a run that needs 4 GPUs."""
    if gpus is None:  # one GPU per process where the cluster has GPUs, else CPU-only runs
        gpus = processes if any(n.get("GPU", 0) >= 1 for n in nodes) else 0
    if gpus > 1 and gpus != processes or processes > 1 and 0 < gpus < processes:
        raise TuneoffError(
            f"--gpus-per-run {gpus:g} with --processes-per-run {processes}: a run trains with one "
            "process per GPU. Pass --processes-per-run N to give each run N GPUs (or no --gpus-per-run: "
            "one GPU per process where the cluster has GPUs)."
        )
    if not gpus:
        cpus = max(cpus, processes)  # a CPU process each
    fits = [n for n in nodes if n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus]
    if not fits:
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise TuneoffError(
            f"Each run asks for {cpus:g} CPUs and {gpus:g} GPUs on one node, but the Ray cluster's "
            f"largest node has {largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs: no run "
            "could ever be placed. Lower --cpus-per-run / --gpus-per-run / --processes-per-run."
        )
    slots = sum(
        int(min(n.get("CPU", 0) // max(cpus, 1e-9), n.get("GPU", 0) // gpus if gpus else float("inf"))) for n in fits
    )
    return cpus, gpus, max(1, slots)


def _remote_run_job(job: Job, processes: int = 1) -> Outcome:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run_job(job, processes=processes)


class Eta:
    """The time left, method by method: a run takes what the finished runs of its method took (spread over the slots
    running at once). A study's first runs are its cheapest (a head's trials take seconds, full fine-tuning's minutes):
    one average over every finished run said 17 minutes for a study heading past an hour. A method with no finished
    run yet is counted at the slowest method's pace so far, and the estimate says "at least"."""

    def __init__(self, methods: list[str], slots: int):
        self.left, self.slots, self.took = list(methods), max(1, slots), {}

    def done(self, method: str, seconds: float) -> None:
        if method in self.left:
            self.left.remove(method)
        self.took.setdefault(method, []).append(seconds)

    def minutes(self, methods: list[str]) -> tuple[float, bool]:
        """Minutes for ``methods``' runs, and whether a method among them has no finished run (a lower bound)."""
        means = {m: sum(t) / len(t) for m, t in self.took.items()}
        slowest = max(means.values(), default=0.0)
        unknown = any(m not in means for m in methods)
        return sum(means.get(m, slowest) for m in methods) / self.slots / 60, unknown


def drive(
    executor,
    jobs,
    total: int,
    on_outcome,
    *,
    before_submit=None,
    later: int = 0,
    methods: list[str] | None = None,
    later_methods: list[str] | None = None,
) -> None:
    """Keep ``executor.slots`` jobs in flight, hand each outcome to ``on_outcome`` as it arrives. ``later``: runs the
    study will plan after these (the comparison runs after the tuning trials), counted in the time left, so an estimate
    read during the trials is the study's, not the phase's. ``methods`` / ``later_methods``: each job's method, in order
    (the time left is then estimated per method: ``Eta``); without them, at the pace of every run so far."""
    started, finished, durations = time.perf_counter(), 0, []
    eta_model = Eta(methods, executor.slots) if methods is not None else None
    jobs = iter(jobs)
    exhausted = stopping = False
    kept, alone = 0, []
    while True:
        if not stopping and stop.requested():
            stopping = exhausted = True
            # no count here: a run trained in this process has already stopped (and left the executor) by the time
            # the request is read; the end of drive() says how many ended, were saved and never started
            log.warning(
                f"{stop.requested()}: stopping; no run starts, and any run in flight saves a checkpoint where it is"
            )
            executor.stop()
        while not exhausted and executor.pending < executor.slots:
            job = next(jobs, None)
            if job is None:
                exhausted = True
                break
            if before_submit is not None:
                before_submit(job)
            executor.submit(job)
        if executor.pending == 0:
            break
        job, outcome = executor.next_done()
        kept += outcome.status == "stopped"
        if outcome.status == "stopped" and not stopping:
            alone.append(outcome)  # its worker alone got a signal: the study goes on, and says so when it ends
        finished += 1
        durations.append(outcome.seconds)
        wall = time.perf_counter() - started
        pace = wall / finished / 60
        if eta_model is not None:
            eta_model.done(job.config.method.name, outcome.seconds)
            now, low = eta_model.minutes(eta_model.left)
            then, low_then = eta_model.minutes(later_methods or [])
        else:
            (now, low), (then, low_then) = (pace * (total - finished), False), (pace * later, False)
        eta = f", ETA {'at least ' if low else ''}{now:.1f} min" if total > finished else ""
        if later:
            after = (
                f"then {'at least' if low_then else 'about'} {then:.0f} min for the {later} runs after "
                f"{'them' if eta else 'these'}"
            )
            eta = f"{eta} ({after})" if eta else f", {after}"
        if stopping or outcome.status == "stopped":
            eta = ""
        where = f" on {outcome.host}" if executor.name != "local" else ""
        log.info(
            f"[{finished}/{total}] {job.run_id} ({job.config.method.name}){where}: {describe(outcome, job.trial)}{eta}"
        )
        on_outcome(job, outcome)
    if alone and not stopping:
        # A run is missing from what the study reports: exit as stopped (128 + the signal), never as a finished study.
        signal_name = next((w for o in alone for w in (o.error or "").split() if w.startswith("SIG")), "SIGTERM")
        raise Stopped(
            f"{len(alone)} run(s) were stopped by a signal their worker alone got "
            f"({', '.join(o.run_id for o in alone)}); the study ran the others. They are pending at their "
            "checkpoints: run the same command with --resume to finish them; until then the study is "
            "incomplete.",
            signal_name,
        )
    if stopping:
        raise Stopped(
            f"Stopped by {stop.requested()}: {finished - kept} run(s) ended before it, {kept} saved where "
            f"they stopped and {total - finished} not started. Run the same command with --resume to continue: "
            "finished runs are kept, stopped ones continue from their checkpoints.",
            stop.requested(),
        )


def describe(outcome, trial: bool = False) -> str:
    """A finished run's line. A trial's shows its validation alone: it is chosen on validation, and its test accuracy
    beside it would invite a reader to choose on test."""
    if outcome.status == "done":
        found = "found complete on disk, " if outcome.found_on_disk else f"{outcome.seconds:.0f}s, "
        test = "" if trial else f", test accuracy {outcome.metrics['test']['accuracy']:.4f}"
        return f"{found}validation accuracy {outcome.metrics['validation']['accuracy']:.4f}{test}"
    if outcome.status == "stopped":  # its message says so, and where its checkpoint is
        return outcome.error or "stopped"
    return f"{outcome.status}: {(outcome.error or '').strip().splitlines()[-1] if outcome.error else ''}"
