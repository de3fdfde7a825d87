"""Starting one run on several processes: ``tuneoff train --num-processes N`` re-runs itself under
``accelerate launch`` (data-parallel; one process per GPU, or N CPU processes on gloo where there is no GPU).

Everything distributed happens inside the one training loop through Accelerate; this module only builds the
launch command and tells a process whether it is the one that prints.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tuneoff.core.errors import TuneoffError
from tuneoff.results.rundir import RunDirectory
from tuneoff.training import stop

RANKS_DIR = "TUNEOFF_RANKS_DIR"  # where a launched run's processes write their pids (announce_rank)
STOPPED = "stopped"  # in RANKS_DIR: the run stopped on request; holds the signal's name (stopped_rank)


def launched() -> bool:
    """True inside a process started by ``accelerate launch`` / ``torchrun`` (they set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def check_sharding(on_cpu: bool) -> None:
    """Refuse an FSDP launch on CPU before Accelerate sees it.

    Accelerate runs FSDP only on GPU-like devices: on a CPU machine an FSDP version 1 config fails deep inside
    Accelerate, and a version 2 config is silently replaced by plain data-parallel training, every process holding
    the whole model, which is not what someone who asked for sharding wants."""
    if on_cpu and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise TuneoffError(
            "The Accelerate config asks for FSDP, but Accelerate shards models with FSDP only on GPUs; "
            "on this CPU it would not shard the model. Run FSDP on a GPU machine, or drop "
            "--accelerate-config for data-parallel training."
        )


def end_processes() -> None:
    """Leave the process group before this process exits. A process that exits with gloo's threads still running
    can abort ("terminate called without an active exception"): a clean run would read as a crashed one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent (``accelerate launch``) dies, so that a run's processes never
    outlive a killed worker and race its retry for the same run directory (see :func:`tied_to_this_process`)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# Executed in the child before it becomes the command: the parent-death signal survives exec (unlike preexec_fn,
# which Python documents as unsafe in a threaded parent such as a Ray worker).
_TIED = "import ctypes, os, sys; ctypes.CDLL(None).prctl(1, 9); os.execvp(sys.argv[1], sys.argv[1:])"


def tied_to_this_process(cmd: list[str]) -> list[str]:
    """``cmd``, made to die (SIGKILL) when this process dies, on Linux; unchanged elsewhere."""
    return [sys.executable, "-c", _TIED, *cmd] if sys.platform.startswith("linux") else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(
    num_processes: int, args: list[str], accelerate_config: str | None = None, module: str = "tuneoff"
) -> list[str]:
    """The ``accelerate launch`` command running ``python -m <module> <args>`` on ``num_processes`` processes.

    ``--multi_gpu`` selects Accelerate's torchrun launcher; on a machine without CUDA the processes fall back to
    the CPU and the gloo backend (Accelerate's MULTI_CPU), which is how the tests run it. An Accelerate config file
    (e.g. one written by ``accelerate config`` for FSDP) replaces the defaults."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if accelerate_config:
        cmd += ["--config_file", accelerate_config]
    else:
        cmd += [
            "--multi_gpu",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
        ]
    return cmd + ["-m", module, *args]


def check_processes(num_processes: int, option: str) -> None:
    """One process per GPU where there are GPUs (CPU processes where there are none)."""
    if num_processes < 1:
        raise TuneoffError(f"{option} {num_processes}: must be at least 1.")
    import torch

    if torch.cuda.is_available() and num_processes > torch.cuda.device_count():
        raise TuneoffError(
            f"{option} {num_processes}, but only {torch.cuda.device_count()} GPUs are visible. Use one process per GPU."
        )


def relaunch(num_processes: int, argv: list[str], accelerate_config: str | None = None) -> int:
    """Run this command again under ``accelerate launch``; returns its exit code (128 + the signal when the run's
    processes stopped on request: they exit 0, see :func:`stopped_rank`)."""
    check_processes(num_processes, "--num-processes")
    args = _without_option(argv, "--num-processes")
    with stop.on_signals():
        code, _, stopped = run_launched(launch_command(num_processes, args, accelerate_config))
    return stop.exit_code(stopped) if stopped is not None else code


def run_launched(cmd: list[str], capture: bool = False) -> tuple[int, str, str | None]:
    """Run an ``accelerate launch`` command to its end: its exit code, its output when ``capture``, and the signal
    that stopped the run on request (None if none did; see :func:`stopped_rank`).

    A stop request to this process (``kill <pid>``, a scheduler's SIGTERM, Ctrl-C: see :mod:`tuneoff.training.stop`)
    reaches each of the run's processes as SIGTERM: they agree on a step, save a checkpoint there and exit. The
    launcher cannot pass it on: torchrun starts each process in a session of its own (a terminal's Ctrl-C never
    reaches them) and on a signal of its own sends them one and SIGKILLs them 30 s later, before a long step ends.
    So the launcher runs in a session of its own too, and each process writes its pid where this one finds it
    (:func:`announce_rank`). Anything else that ends this wait (a second Ctrl-C) kills the launcher, and the
    processes die with it (their parent-death signal)."""
    # on_signals: in a study's worker the request is forgotten once this run has ended (its next run trains)
    with stop.on_signals(), tempfile.TemporaryDirectory(prefix="tuneoff-ranks-") as ranks:
        pipe = subprocess.PIPE if capture else None
        proc = subprocess.Popen(
            tied_to_this_process(cmd),
            env={**os.environ, RANKS_DIR: ranks},
            stdout=pipe,
            stderr=subprocess.STDOUT if capture else None,
            text=True,
            start_new_session=True,
        )
        told: set[str] = set()
        try:
            while True:
                try:
                    out, _ = proc.communicate(timeout=0.5)
                    stopped = Path(ranks, STOPPED)
                    return proc.returncode, out or "", stopped.read_text() if stopped.is_file() else None
                except subprocess.TimeoutExpired:
                    if stop.requested():
                        told |= _signal_ranks(Path(ranks), told)
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def _signal_ranks(ranks: Path, told: set[str]) -> set[str]:
    """SIGTERM to each announced process not told yet (one that has not announced itself is told at a later poll)."""
    now = set()
    for pid in {p.stem for p in ranks.glob("*.pid")} - told:
        with contextlib.suppress(ProcessLookupError):  # ended already
            os.kill(int(pid), signal.SIGTERM)
        now.add(pid)
    return now


def announce_rank() -> None:
    """In a process started by :func:`run_launched` (nothing elsewhere: under a user's own ``accelerate launch`` the
    launcher's signals keep their meaning): it dies with the launcher, from now on SIGTERM requests the stop (kept
    while the run is prepared, as a study worker keeps it), and its pid is written where the parent finds it."""
    where = os.environ.get(RANKS_DIR)
    if where:
        die_with_parent()
        stop.in_worker()
        (Path(where) / f"{os.getpid()}.pid").touch()


def stopped_rank(signal_name: str | None) -> bool:
    """In a process started by :func:`run_launched`, whose run stopped on request: tell the parent (which exits
    128 + the signal) and return True, so that this process exits 0. A non-zero exit would make torchrun report
    the run as failed (a traceback and "FAILED") and signal the other processes while they save. Elsewhere False."""
    if not os.environ.get(RANKS_DIR):
        return False
    marker = Path(os.environ[RANKS_DIR], STOPPED)
    if signal_name or not marker.exists():  # the process that got the signal names it
        marker.write_text(signal_name or "")
    return True


def _without_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def on_main_process(accelerator, fn, *args) -> None:
    """Call ``fn`` on process 0 only, and raise what it raised on every process, so that all stop together."""
    from accelerate.utils import broadcast_object_list

    message = [None]
    if accelerator.is_main_process:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed to every process, raised there
            message = [exc]
    if accelerator.num_processes > 1:
        broadcast_object_list(message)
    if message[0] is not None:
        raise message[0]


def open_run_directory(cfg, run_id: str, resume: bool, find: bool, accelerator):
    """Process 0 opens (or, resuming, finds) the run directory and tells the others its name, or its error."""

    from accelerate.utils import broadcast_object_list

    message = [None, None]
    if accelerator.is_main_process:
        try:
            run = RunDirectory.open(cfg.output_dir, run_id, cfg.to_yaml(), resume, find)
            message = [run.run_id, None]
        except TuneoffError as exc:
            message = [None, str(exc)]
    if accelerator.num_processes > 1:
        broadcast_object_list(message)
    if message[1] is not None:
        raise TuneoffError(message[1])
    return run if accelerator.is_main_process else RunDirectory(Path(cfg.output_dir), message[0])
