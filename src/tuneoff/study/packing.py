"""Packing a study's runs onto one machine: several runs at once, each in a worker process of its own.

A run on a 2-core CPU does not use both cores well (small matrix products, Python between them): two runs with one
thread each, each pinned to its own core, finish about 1.5x sooner than the same two runs one after another with two
threads each (measured on this project's 2-core machines, not yet a committed benchmark). So on a CPU the local executor runs ``parallel`` runs at once with
the cores split between them (``threads`` each, set explicitly, every worker pinned to its own cores so neighbours
never oversubscribe them). On a GPU, several runs share the device when the planner says they fit in its memory.

Every guarantee of a run holds, because each run is still one ``run_job`` call: its run directory appears atomically,
its checkpoints let ``--resume`` continue it, only the driver writes the results store (outcomes come back to it),
the shared feature cache is built once (concurrent builders wait on its lock, ``training.frozen``), and a run's peak
memory is its own process's (``VmHWM`` on a CPU, ``max_memory_allocated`` per process on a GPU), not its neighbours'.
Workers live as long as the study: imports and the tokenized data are paid once per worker, not once per run. The
price: a run's CPU peak counts what the worker's earlier runs left resident (about 4% for LoRA after full
fine-tuning, bench/results/memory-reuse-20261129.md), and each run records how many ran before it in its process.
``isolate`` (``tuneoff run --isolate-runs``) gives every run a new worker instead, for a study whose claim is memory:
each peak is that run's alone, for the library imports paid again per run (not benchmarked).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import platform
import signal
import sys
import warnings
from concurrent.futures.process import BrokenProcessPool

from tuneoff.core.errors import TuneoffError
from tuneoff.study.executors import Job, LocalExecutor, Outcome, RayExecutor, run_job
from tuneoff.training import stop
from tuneoff.training.launcher import check_processes, die_with_parent

log = logging.getLogger(__name__)
GB_PER_CPU_RUN = 2.0  # resident memory one small-model run needs (MiniLM peaks near 1.4 GB), for the automatic choice


def cpu_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def free_cores() -> tuple[int, int, float]:
    """(cores this process may use, of them the ones other work leaves free, the 1-minute load average). On a shared
    machine two OpenMP threads beside a busy core fight for it: a run crawled at 9-12 samples/s with 2 threads where
    1 thread gave 67 (a new user's trial, issue #43): count what the load says is taken."""
    cores = len(cpu_cores())
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not Unix
        return cores, cores, 0.0
    return cores, max(1, cores - int(round(load))), load


def thread_note(cores: int, free: int, load: float, chosen: str) -> str | None:
    """What a command says when other work holds some of the cores (None when none is taken)."""
    if free >= cores:
        return None
    return (
        f"other work is using about {cores - free} of the {cores} core(s) this process may use (load {load:.1f}): "
        f"{chosen}, so that threads do not fight over a busy core; --threads (and --parallel for a study) choose "
        "otherwise"
    )


def available_gb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


def choose(
    parallel: int | str, threads: int | None, jobs: int = 1 << 30, gpu_peak_mb: float | None = None
) -> tuple[int, int]:
    """(runs at once, threads per run). ``parallel="auto"``: on a CPU, one thread per run up to 4 cores, two up to 16,
    four beyond (the cores split between runs), no more runs than memory holds at ``GB_PER_CPU_RUN`` each or than there
    are jobs; on a GPU, as many runs as the planned peak fits in 80% of its free memory (at most 8)."""
    cores = cpu_cores()
    total, free, load = free_cores()
    if parallel == "auto" and threads is None and gpu_peak_mb is None and free < total:
        cores = cores[:free]  # auto: only the cores other work leaves free (a fixed --parallel/--threads is obeyed)
    if parallel != "auto":
        n = int(parallel)
        if n < 1:
            raise TuneoffError(f"--parallel {parallel}: give a number of runs at once (1 or more), or auto.")
        return n, threads or max(1, len(cores) // n)
    if gpu_peak_mb is not None:
        import torch

        free, _ = torch.cuda.mem_get_info()
        n = max(1, min(8, int(0.8 * free / (gpu_peak_mb * 2**20))))
        return min(n, jobs), threads or max(1, len(cores) // min(n, jobs))
    per_run = threads or (1 if len(cores) <= 4 else 2 if len(cores) <= 16 else 4)
    n = max(1, min(len(cores) // per_run, int(available_gb() // GB_PER_CPU_RUN), jobs))
    note = thread_note(total, free, load, f"{n} run(s) at once, {per_run} thread(s) each") if threads is None else None
    if note:
        log.warning(note)
    return n, per_run


def _init_worker(threads: int, level: int) -> None:
    """A worker's settings before it imports torch: its thread count and the driver's log level; and its life tied to
    the driver's: a driver stopped by a signal it cannot clean up after (``kill``, SIGKILL, an out of memory kill)
    would otherwise leave its workers training on, orphaned, writing into the study beside the next ``--resume``."""
    die_with_parent()
    stop.in_worker()  # SIGTERM: the run saves a checkpoint and stops; Ctrl-C is the driver's to forward
    driver = multiprocessing.parent_process()
    if driver is not None and os.getppid() != driver.pid:  # the driver died before the tie was made
        os._exit(1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    # Quiet libraries, as the command line keeps them: no loading bars or load reports from every worker.
    for var, value in (
        ("TOKENIZERS_PARALLELISM", "false"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
    ):
        os.environ.setdefault(var, value)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("tuneoff").setLevel(level)


def _pin(cores: set[int] | None) -> None:
    """Every thread of this process onto ``cores`` (threads started later inherit it): a worker may hold a different
    core set for each run, and a thread left on the last run's cores would share them with a neighbour's."""
    if cores is None or not hasattr(os, "sched_setaffinity"):  # not Linux: the run trains unpinned
        return
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cores)
        except OSError:  # a thread that ended meanwhile
            pass


def _pinned_run(job: Job, progress: bool, processes: int, cores: set[int] | None) -> Outcome:
    _pin(cores)
    return run_job(job, progress, processes)


class PackedExecutor:
    """``parallel`` runs at once, each in a worker process with ``threads`` threads pinned to cores of its own (the
    driver hands each run a free core set and takes it back when the run ends); ``isolate``: a new worker per run."""

    name = "local"

    def __init__(
        self, parallel: int, threads: int, progress: bool = False, processes_per_run: int = 1, isolate: bool = False
    ):
        self.slots, self.threads, self.progress, self.processes = parallel, threads, progress, processes_per_run
        self.isolate, self.stopping = isolate, False
        self.inflight: dict[cf.Future, tuple[Job, set[int] | None]] = {}
        cores = cpu_cores()  # consecutive cores per run, when every run can have its own
        fits = threads * parallel <= len(cores)
        self.free: list[set[int]] | None = (
            [set(cores[k * threads : (k + 1) * threads]) for k in range(parallel)] if fits else None
        )
        self.pool = self._pool()
        log.info(
            f"local: {parallel} runs at once, {threads} thread(s) each (on {len(cores)} cores)"
            + (", each run in a new process" if isolate else "")
        )

    def _pool(self) -> cf.ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited OpenMP or CUDA state
        fresh = {"max_tasks_per_child": 1} if self.isolate else {}  # Python >= 3.11 (checked by make_executor)
        return cf.ProcessPoolExecutor(
            max_workers=self.slots,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.threads, logging.getLogger("tuneoff").getEffectiveLevel()),
            **fresh,
        )

    def submit(self, job: Job) -> None:
        cores = self.free.pop(0) if self.free else None
        self.inflight[self.pool.submit(_pinned_run, job, self.progress, self.processes, cores)] = (job, cores)

    @property
    def pending(self) -> int:
        return len(self.inflight)

    def next_done(self) -> tuple[Job, Outcome]:
        done = set()
        while not done:  # a signal the driver alone got (`kill <pid>`) reaches the workers within a second
            done, _ = cf.wait(list(self.inflight), timeout=1.0, return_when=cf.FIRST_COMPLETED)
            if stop.requested() and not self.stopping:
                self.stop()
        future = next(iter(done))
        job, cores = self.inflight.pop(future)
        if cores is not None:
            self.free.append(cores)
        try:
            return job, future.result()
        except BrokenProcessPool:  # a worker was killed (out of memory, a signal): its run resumes from its checkpoint
            if self.stopping:  # the others are stopping too: none starts again
                return job, Outcome(
                    job.run_id,
                    "failed",
                    error="its worker process died while the study stopped; "
                    "`--resume` continues it from its last checkpoint",
                )
            self.pool.shutdown(wait=False, cancel_futures=True)
            lost = list(self.inflight.values())
            self.inflight.clear()
            self.pool = self._pool()
            for other, held in lost:  # runs that were in flight beside it start again (from their checkpoints)
                if held is not None:
                    self.free.append(held)
                self.submit(other)
            return job, Outcome(
                job.run_id,
                "failed",
                error="its worker process died (killed, or out of memory); "
                "`--resume` continues it from its last checkpoint",
            )
        except Exception as exc:  # noqa: BLE001 - run_job reports its own failures; this is the pool's (pickling, ...)
            return job, Outcome(job.run_id, "failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """SIGTERM to every worker: each run in flight saves a checkpoint at its next step and comes back stopped."""
        self.stopping = True
        for worker in multiprocessing.active_children():  # this driver's children: the pool's workers
            with contextlib.suppress(OSError):
                os.kill(worker.pid, signal.SIGTERM)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.inflight.clear()


def make_executor(
    name: str,
    *,
    address: str | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float | None = None,
    max_retries: int = 3,
    progress: bool = False,
    processes_per_run: int = 1,
    parallel: int | str = 1,
    threads: int | None = None,
    jobs: int = 1 << 30,
    gpu_peak_mb: float | None = None,
    isolate: bool = False,
):
    """The executor a study runs on: ``local`` (one run at a time here, or ``parallel`` at once in worker processes;
    ``auto`` chooses from the machine, see ``choose``; ``isolate``: each run in a new process) or ``ray``."""
    if name == "local":
        check_processes(processes_per_run, "--processes-per-run")
        if processes_per_run > 1:  # a run that is itself several processes takes the machine (each run new ones)
            return LocalExecutor(progress, processes_per_run)
        if isolate and sys.version_info < (3, 11):
            raise TuneoffError(
                "--isolate-runs needs Python 3.11 or later (a worker process per run); this is "
                f"{platform.python_version()}. Run without it: CPU peaks are then upper bounds."
            )
        n, per_run = choose(parallel, threads, jobs, gpu_peak_mb)
        if n > 1 or isolate:
            return PackedExecutor(n, per_run, progress, isolate=isolate)
        return LocalExecutor(progress, threads=threads)
    if isolate:
        raise TuneoffError("--isolate-runs is for the local executor (Ray schedules its own worker processes).")
    if name == "ray":
        return RayExecutor(address, cpus_per_run, gpus_per_run, max_retries, processes_per_run)
    raise TuneoffError(f"--executor {name!r}: choose local or ray.")
