"""A line every minute when the progress bar is off (``--no-progress``, a study's workers, a log file): a run of one
long epoch printed its header and then nothing for 12 minutes (no evaluation until the epoch ends), and its user could
not tell a hang from progress. It stands where the bar stands (``update``, ``set_postfix``, ``close``)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)
EVERY = 60.0  # seconds between lines


class Heartbeat:
    def __init__(self, run_id: str, total: int, initial: int = 0, every: float = EVERY, clock=time.monotonic):
        self.run_id, self.total, self.step, self.every, self.clock = run_id, total, initial, every, clock
        self.started = self.last = clock()
        self.first, self.postfix = initial, {}

    def update(self, n: int = 1) -> None:
        self.step += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            done = self.step - self.first
            rate = done / max(now - self.started, 1e-9)
            left = (self.total - self.step) / rate / 60 if rate > 0 else float("nan")
            extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
            log.info(
                f"run {self.run_id}: step {self.step}/{self.total} ({self.step / max(self.total, 1):.0%}), "
                f"{rate * 60:.0f} steps/min{extra}, about {left:.0f} min left"
            )

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        pass
