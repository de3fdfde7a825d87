"""training.heartbeat: with the progress bar off, a line every minute, so a long epoch is not silence."""

from __future__ import annotations

from tuneoff.training.heartbeat import Heartbeat


def test_a_run_without_a_progress_bar_says_where_it_is_every_minute(caplog):
    now = {"t": 0.0}
    beat = Heartbeat("r1", total=1000, initial=100, every=60.0, clock=lambda: now["t"])
    with caplog.at_level("INFO", logger="tuneoff"):
        for _ in range(50):  # 50 steps in 50 s: nothing yet
            now["t"] += 1.0
            beat.update(1)
        assert not caplog.records
        beat.set_postfix(loss="0.4321")
        for _ in range(10):  # past a minute: one line, with the rate and the time left
            now["t"] += 1.0
            beat.update(1)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == "run r1: step 160/1000 (16%), 60 steps/min, loss 0.4321, about 14 min left"
