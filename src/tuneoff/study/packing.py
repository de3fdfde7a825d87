"""Packing a study's runs onto one machine: several runs at once, each in a worker process of its own.

A run on a 2-core CPU does not use both cores well (small matrix products, Python between them): two runs with one
thread each, each pinned to its own core, finish about 1.5x sooner than the same two runs one after another with two
threads each (FIELD_NOTES, measured from outside). So on a CPU the local executor runs ``parallel`` runs at once with
the cores split between them (``threads`` each, set explicitly, every worker pinned to its own cores so neighbours
never oversubscribe them). On a GPU, several runs share the device when the planner says they fit in its memory.

Every guarantee of a run holds, because each run is still one ``run_job`` call: its run directory appears atomically,
its checkpoints let ``--resume`` continue it, only the driver writes the results store (outcomes come back to it),
the shared feature cache is built once (concurrent builders wait on its lock, ``training.frozen``), and a run's peak
memory is its own process's (``VmHWM`` on a CPU, ``max_memory_allocated`` per process on a GPU), not its neighbours'.
Workers live as long as the study: imports and the tokenized data are paid once per worker, not once per run.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import warnings
from concurrent.futures.process import BrokenProcessPool

from tuneoff.core.errors import TuneoffError
from tuneoff.study.executors import Job, LocalExecutor, Outcome, RayExecutor, run_job
from tuneoff.training.launcher import check_processes, die_with_parent

log = logging.getLogger(__name__)
GB_PER_CPU_RUN = 2.0  # resident memory one small-model run needs (MiniLM peaks near 1.4 GB), for the automatic choice


def cpu_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def available_gb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


def choose(parallel: int | str, threads: int | None, jobs: int = 1 << 30, gpu_peak_mb: float | None = None) -> tuple[int, int]:
    """(runs at once, threads per run). ``parallel="auto"``: on a CPU, one thread per run up to 4 cores, two up to 16,
    four beyond (the cores split between runs), no more runs than memory holds at ``GB_PER_CPU_RUN`` each or than there
    are jobs; on a GPU, as many runs as the planned peak fits in 80% of its free memory (at most 8)."""
    cores = cpu_cores()
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
    return n, per_run


def _init_worker(threads: int, cores, level: int) -> None:
    """A worker's settings before it imports torch: its thread count, its own cores, the driver's log level; and its
    life tied to the driver's: a driver stopped by a signal it cannot clean up after (``kill``, SIGKILL, an out of
    memory kill) would otherwise leave its workers training on, orphaned, writing into the study beside the next
    ``--resume``."""
    die_with_parent()
    driver = multiprocessing.parent_process()
    if driver is not None and os.getppid() != driver.pid:  # the driver died before the tie was made
        os._exit(1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    # Quiet libraries, as the command line keeps them: no loading bars or load reports from every worker.
    for var, value in (("TOKENIZERS_PARALLELISM", "false"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(var, value)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if cores is not None:
        try:
            os.sched_setaffinity(0, cores.get())
        except (AttributeError, OSError):
            pass
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("tuneoff").setLevel(level)


class PackedExecutor:
    """``parallel`` runs at once, each in a worker process with ``threads`` threads pinned to its own cores."""

    name = "local"

    def __init__(self, parallel: int, threads: int, progress: bool = False, processes_per_run: int = 1):
        self.slots, self.threads, self.progress, self.processes = parallel, threads, progress, processes_per_run
        self.inflight: dict[cf.Future, Job] = {}
        self.pool = self._pool()
        log.info(f"local: {parallel} runs at once, {threads} thread(s) each (on {len(cpu_cores())} cores)")

    def _pool(self) -> cf.ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited OpenMP or CUDA state
        cores = cpu_cores()
        sets = context.Queue()
        for k in range(self.slots):  # consecutive cores per worker; more workers than core sets share round-robin
            chunk = cores[(k * self.threads) % len(cores):][: self.threads] or cores[: self.threads]
            sets.put(set(chunk))
        return cf.ProcessPoolExecutor(max_workers=self.slots, mp_context=context, initializer=_init_worker,
                                      initargs=(self.threads, sets if self.threads * self.slots <= len(cores) else None,
                                                logging.getLogger("tuneoff").getEffectiveLevel()))

    def submit(self, job: Job) -> None:
        self.inflight[self.pool.submit(run_job, job, self.progress, self.processes)] = job

    @property
    def pending(self) -> int:
        return len(self.inflight)

    def next_done(self) -> tuple[Job, Outcome]:
        done, _ = cf.wait(list(self.inflight), return_when=cf.FIRST_COMPLETED)
        future = next(iter(done))
        job = self.inflight.pop(future)
        try:
            return job, future.result()
        except BrokenProcessPool:  # a worker was killed (out of memory, a signal): its run resumes from its checkpoint
            self.pool.shutdown(wait=False, cancel_futures=True)
            lost = list(self.inflight.values())
            self.inflight.clear()
            self.pool = self._pool()
            for other in lost:  # runs that were in flight beside it start again (from their checkpoints)
                self.submit(other)
            return job, Outcome(job.run_id, "failed", error="its worker process died (killed, or out of memory); "
                                "`--resume` continues it from its last checkpoint")
        except Exception as exc:  # noqa: BLE001 - run_job reports its own failures; this is the pool's (pickling, ...)
            return job, Outcome(job.run_id, "failed", error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.inflight.clear()


def make_executor(name: str, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float | None = None,
                  max_retries: int = 3, progress: bool = False, processes_per_run: int = 1, parallel: int | str = 1,
                  threads: int | None = None, jobs: int = 1 << 30, gpu_peak_mb: float | None = None):
    """The executor a study runs on: ``local`` (one run at a time here, or ``parallel`` at once in worker processes;
    ``auto`` chooses from the machine, see ``choose``) or ``ray``."""
    if name == "local":
        check_processes(processes_per_run, "--processes-per-run")
        if processes_per_run > 1:  # a run that is itself several processes takes the machine
            return LocalExecutor(progress, processes_per_run)
        n, per_run = choose(parallel, threads, jobs, gpu_peak_mb)
        if n > 1:
            return PackedExecutor(n, per_run, progress)
        return LocalExecutor(progress, threads=threads)
    if name == "ray":
        return RayExecutor(address, cpus_per_run, gpus_per_run, max_retries, processes_per_run)
    raise TuneoffError(f"--executor {name!r}: choose local or ray.")
