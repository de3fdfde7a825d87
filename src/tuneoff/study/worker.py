"""The processes of one study run that trains on several processes (``tuneoff run --processes-per-run N``).

An executor (local or a Ray task) starts ``accelerate launch -m tuneoff.study.worker <job> <outcome>``; every process
loads the pickled :class:`~tuneoff.executors.Job`, runs it with :func:`~tuneoff.executors.run_job` (the same
function a single-process run uses), and process 0 writes the :class:`~tuneoff.executors.Outcome` back. No outcome
file, or a non-zero exit with an unfinished run, means a process died (killed, preempted): the executor treats that
as a dead worker and retries.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

from tuneoff.study.executors import run_job
from tuneoff.training.launcher import announce_rank, end_processes, is_main_process


def main(job_file: str, outcome_file: str) -> None:
    announce_rank()  # dies with its launcher; a stop request to the executor reaches this process as SIGTERM
    job = pickle.loads(Path(job_file).read_bytes())
    try:
        outcome = run_job(job)
        if is_main_process():
            tmp = Path(outcome_file + ".tmp")
            tmp.write_bytes(pickle.dumps(outcome))
            os.replace(tmp, outcome_file)
    finally:
        end_processes()


if __name__ == "__main__":
    main(*sys.argv[1:3])
