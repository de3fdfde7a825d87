"""A request to stop, made by a signal: a run saves a checkpoint where it is and ends; a study finishes nothing more.

A scheduler's time limit (Slurm, a cloud spot instance's notice) sends SIGTERM, ``kill`` sends SIGTERM and Ctrl-C
(or a notebook's *interrupt*) sends SIGINT. Without a handler each kills the process at once and a run loses what it
trained since its last checkpoint (an epoch end, by default: for a long epoch that is most of an hour on a CPU).
While :func:`on_signals` is active the signal only *requests* the stop: the loop reads :func:`requested` after each
optimizer step, writes a checkpoint there and raises :class:`RunStopped`, and ``--resume`` continues the run from
that step exactly (the data order is a function of seed and epoch, so a resumed run sees the rest of its epoch). A
second Ctrl-C in the main process stops at once, as without the handler (the run resumes from its last checkpoint).

Handlers can only be set from a process's main thread; elsewhere (a thread of a Ray worker) the default behaviour
stays. A study's worker processes ignore SIGINT (Ctrl-C reaches the whole process group: the driver forwards a
SIGTERM to each of its workers, so a worker between runs is not killed by it). A run of several processes gets it
the same way from the process that launched it (``launcher.run_launched``), not through torchrun.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from tuneoff.core.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state = {"requested": None, "depth": 0, "worker": False}


class RunStopped(Stopped):
    """A run that stopped on request, its checkpoint saved at the step it reached: ``--resume`` continues it."""


def requested() -> str | None:
    """The name of the signal that asked to stop (``SIGTERM``, ``SIGINT``), or None."""
    return _state["requested"]


def exit_code(signal_name: str | None) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended (SIGTERM's when the name is unknown)."""
    return 128 + int(getattr(signal.Signals, signal_name or "", signal.SIGTERM))


def request(signum: int, frame=None) -> None:
    """The handler: note the request; a second SIGINT in the main process stops at once (KeyboardInterrupt)."""
    again = _state["requested"] is not None
    _state["requested"] = signal.Signals(signum).name
    if again and signum == signal.SIGINT and not _state["worker"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def on_signals():
    """SIGTERM and SIGINT request a stop while this is active (nested uses share one request; the outermost starts
    with none and puts the previous handlers back). A study's worker keeps a request that came before its run began
    (while it prepared the run) and forgets it once the run has ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state["depth"] == 0 and not _state["worker"]:  # a worker's request may come while it prepares a run: kept
        _state["requested"] = None
    previous = {
        s: signal.signal(s, signal.SIG_IGN if s == signal.SIGINT and _state["worker"] else request) for s in SIGNALS
    }
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        for s, handler in previous.items():
            signal.signal(s, handler)
        if _state["worker"] and _state["depth"] == 0:  # served: a worker signalled alone trains its next run
            _state["requested"] = None


@contextlib.contextmanager
def interrupting(what: str):
    """For work with nothing to save midway (``tuneoff predict``): SIGTERM or SIGINT ends it at once, as an exception,
    so that the files it was writing are cleaned away (``atomic_open``) and it exits 128 + the signal with a message,
    instead of dying where it stood and leaving a half-written temporary file."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop_now(signum, frame=None):
        raise Stopped(
            f"{what} stopped by {signal.Signals(signum).name}; nothing was written (its temporary file is "
            "removed). Run it again.",
            signal.Signals(signum).name,
        )

    previous = {s: signal.signal(s, stop_now) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def agreed(accelerator, world: int, device, synced: bool) -> bool:
    """Whether the run stops after this optimizer step. Several processes must stop at the same step (their
    collectives would hang otherwise): they agree at the steps where they synchronise anyway (``synced``), each
    one's request summed over them."""
    if world == 1:
        return requested() is not None
    if not synced:
        return False
    import torch

    asked = torch.tensor(int(requested() is not None), device=device)
    return bool(accelerator.reduce(asked, "sum") > 0)


def in_worker() -> None:
    """A study worker process: SIGTERM requests the stop for as long as it lives, SIGINT is left to the driver."""
    _state["worker"] = True
    signal.signal(signal.SIGTERM, request)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
