"""Decide mode (study.rounds): the error spent across looks, who gets another seed, and a study that runs its rounds,
resumes and rebuilds like a fixed one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_study
from typer.testing import CliRunner

from tuneoff.cli.app import app
from tuneoff.study import rounds

sys.path.insert(0, str(Path(__file__).parent))
from test_verdict import condition, fake_run, rights, truth_of  # noqa: E402

runner = CliRunner()


def test_the_error_spent_over_every_look_is_alpha():
    """O'Brien-Fleming-type spending (Lan & DeMets) turned into each look's nominal level: a statistic that is a
    Brownian motion at fractions S / 10 of the seeds crosses some look's one-sided boundary with chance alpha / 2 over
    the looks from 3 to 10 seeds (checked on 400,000 simulated paths); the first look spends A(0.3) = 2 - 2 Phi(1.96 /
    sqrt(0.3)) = 0.00035, each later look a little more; the last tests near 3.4% instead of 5%."""
    from scipy import stats

    levels = [rounds.look_alpha(s, 3, 10, 0.05) for s in range(3, 11)]
    assert levels[0] == pytest.approx(0.000346, abs=2e-6) and all(b > a for a, b in zip(levels, levels[1:]))
    assert 0.03 < levels[-1] < 0.04
    rng = np.random.default_rng(0)
    fractions = np.arange(3, 11) / 10
    steps = rng.normal(0, 1, (400_000, 8)) * np.sqrt(np.diff(np.concatenate([[0], fractions])))
    z = np.cumsum(steps, axis=1) / np.sqrt(fractions)
    crossed = (z > stats.norm.isf(np.array(levels) / 2)).any(axis=1).mean()
    assert crossed == pytest.approx(0.025, abs=0.001)
    assert rounds.look_alpha(12, 3, 10, 0.05) == levels[-1], "past max_seeds: the last look's level"
    assert rounds.seconds("2h") == 7200 and rounds.seconds("90m") == 5400 and rounds.seconds("45") == 45
    with pytest.raises(ValueError):
        rounds.seconds("soon")
    assert rounds.round_seed({1, 2, 3}, 0) == 4 and rounds.round_seed({1, 2}, 7) == 8


def test_seeds_go_where_they_can_settle_an_open_comparison():
    """After a look: a condition shown worse than the best by more than the margin gets no seed (racing); one whose
    comparison with the pick is open and dominated by seed variance gets one, and so does the pick; at max_seeds, none,
    said; a comparison its test examples hold open gets none, said."""
    from tuneoff.analysis.verdict import analyse

    n = 2000
    truth = truth_of(n)

    base = rights(n, 1700, 0)

    def moved(by, seed):
        """``base`` with ``by`` more (or fewer) examples right: the two methods agree on the rest, so the test set
        holds little of their difference and the seeds most of it."""
        r, rng = base.copy(), np.random.default_rng(seed)
        r[rng.choice(np.flatnonzero(r == (0 if by > 0 else 1)), abs(by), replace=False)] = 1 if by > 0 else 0
        return r

    def conds(k_open):
        scatter = [-40, 0, 40]  # the open one's seeds scatter: seeds, not the test set, hold it open
        return [
            condition(
                "full",
                "full",
                [
                    fake_run(s, moved(5, s), truth, val=0.9, resources={"trainable_pct": 100.0, "train_seconds": 300.0})
                    for s in range(k_open)
                ],
            ),
            condition(
                "lora",
                "lora",
                [
                    fake_run(
                        s,
                        moved(scatter[s % 3], 10 + s),
                        truth,
                        val=0.85,
                        resources={"trainable_pct": 0.3, "train_seconds": 100.0},
                    )
                    for s in range(k_open)
                ],
            ),
            condition(
                "head",
                "head",
                [
                    fake_run(
                        s,
                        rights(n, 1300, 20 + s),
                        truth,
                        val=0.6,
                        resources={"trainable_pct": 0.01, "train_seconds": 10.0},
                    )
                    for s in range(k_open)
                ],
            ),
        ]

    verdicts = analyse(conds(3))
    v = verdicts[0]
    calls = v.decisions[v.decisions.against == "pick"].set_index("condition").call
    assert calls["head"] == "worse" and calls["lora"] == "undecided"
    chosen, notes = rounds.who_gets_a_seed(verdicts, 30, 0.01)
    assert chosen == {"full", "lora"} and not notes
    chosen, notes = rounds.who_gets_a_seed(verdicts, 10, 0.01)  # 10 seeds would settle it one time in nine: futile
    assert chosen == set() and notes == [
        "lora against full: more seeds would hardly settle it; it would need more than max_seeds (10) seeds"
    ]
    chosen, notes = rounds.who_gets_a_seed(verdicts, 3, 0.01)
    assert chosen == set() and notes == ["lora against full: open at max_seeds (3)"]
    # two methods whose errors fall on different examples, on 100 of them: the test set holds the comparison open
    m = 100
    few = truth_of(m)
    small = analyse(
        [
            condition(
                name,
                name,
                [
                    fake_run(
                        s,
                        rights(m, 85, 10 * i + s),
                        few,
                        val=0.9 - i / 100,
                        resources={"trainable_pct": pct, "train_seconds": sec},
                    )
                    for s in range(3)
                ],
            )
            for i, (name, pct, sec) in enumerate((("full", 100.0, 300.0), ("lora", 0.3, 100.0)))
        ]
    )
    chosen, notes = rounds.who_gets_a_seed(small, 30, 0.01)
    assert chosen == set() and notes == [
        "lora against full: more seeds would hardly settle it; its 100 test examples "
        "limit it (more test examples would settle it)"
    ], notes


def test_a_study_until_decided_adds_seeds_where_they_can_settle_it(tiny_bert, toy_csv, tmp_path):
    """The tiny study, one seed each, until_decided with max_seeds 3: after its first look each open condition gets a
    second seed, then a third, each round one seed shared by all (common random numbers); the log says why it stopped;
    the report reads at the last look's level; --resume adds nothing; a rebuilt store indexes the rounds' runs."""
    spec = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        seeds=[1],
        until_decided={"max_seeds": 3},
        analysis={"margin": 0.25},
        train={"epochs": 3},
    )
    results = tmp_path / "results"
    result = runner.invoke(app, ["run", str(spec), "--results", str(results)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "decide mode:" in text
    import sqlite3

    rows = (
        sqlite3.connect(results / "tuneoff.sqlite").execute("SELECT run_id, seed FROM runs ORDER BY run_id").fetchall()
    )
    seeds = {run_id.rsplit("-s", 1)[0]: set() for run_id, _ in rows}
    for run_id, seed in rows:
        seeds[run_id.rsplit("-s", 1)[0]].add(seed)
    assert all(s <= {1, 2, 3} and 1 in s for s in seeds.values())
    # one seed shows nothing above the majority class on 24 examples: the rounds add seeds (2, then 3 where still open)
    assert all({1, 2} <= s for s in seeds.values()), (seeds, text)
    assert "another seed (2) for lora, partial_top1" in text
    verdict = json.loads((results / "tiny" / "report" / "verdict.json").read_text())
    assert "decide mode, its last look at" in verdict["groups"][0]["card"]["evidence"]
    again = runner.invoke(app, ["run", str(spec), "--results", str(results), "--resume"])
    assert again.exit_code == 0, again.output
    assert sqlite3.connect(results / "tuneoff.sqlite").execute("SELECT count(*) FROM runs").fetchone()[0] == len(rows)
    rebuilt = runner.invoke(app, ["runs", "rebuild", "--results", str(results)])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert sqlite3.connect(results / "tuneoff.sqlite").execute("SELECT count(*) FROM runs").fetchone()[0] == len(rows)
    np.testing.assert_equal(
        sorted(r[0] for r in rows),
        sorted(r[0] for r in sqlite3.connect(results / "tuneoff.sqlite").execute("SELECT run_id FROM runs").fetchall()),
    )


@pytest.mark.slow
def test_a_round_stopped_by_sigterm_is_finished_first_on_resume(tiny_bert, toy_csv, tmp_path):
    """SIGTERM while a decide-mode round trains: the study exits 143 with the round's runs pending at their
    checkpoints, and --resume finishes that round (from the checkpoints) before it looks again, instead of starting
    another seed and leaving them behind."""
    import os
    import signal
    import subprocess
    import time

    from tuneoff.results.store import Store

    path = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        "rounds",
        seeds=[1],
        until_decided={"max_seeds": 2},
        analysis={"margin": 0.25},
        train={"epochs": 30},
    )
    env = {**os.environ, "TUNEOFF_PARALLEL": "2", "TUNEOFF_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "tuneoff", "run", str(path), "--results", str(tmp_path / "r")]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    runs = tmp_path / "r" / "rounds" / "runs"
    try:
        deadline = time.monotonic() + 600
        while not list(runs.glob(".*-s2.tmp/checkpoints/step-*")):  # a run of the first round has trained an epoch
            assert proc.poll() is None and time.monotonic() < deadline, "the study ended before a round began"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "decide mode: finishing the interrupted round first" in resumed.stderr
    store = Store(tmp_path / "r")
    rows = {r["run_id"]: r for r in store.runs("rounds")}
    store.close()
    assert {r["seed"] for r in rows.values()} == {1, 2} and {r["status"] for r in rows.values()} == {"done"}, (
        rows.keys()
    )
    assert any(json.loads(r["resources"]).get("resumed_from_step") for k, r in rows.items() if k.endswith("-s2"))


def test_a_contender_not_yet_shown_above_the_baseline_leaves_the_verdict_open():
    """The pick alone above the majority class is no decision while a condition scoring higher is merely not shown
    above it yet (its seeds scatter): decide mode's early looks test at a few in ten thousand, and there a worse
    condition whose seeds agreed was "decided" as the only candidate (10.7% wrong recommendations in a simulated
    study whose seeds dominate). The open condition gets the next seed."""
    from tuneoff.analysis.verdict import analyse

    n = 2000
    truth = truth_of(n)  # 60% negative: the majority class scores 0.6
    steady = condition(
        "full",
        "full",
        [fake_run(s, rights(n, 1300 + 5 * s, s), truth, val=0.7, resources={"trainable_pct": 100.0}) for s in range(3)],
    )
    scattered = condition(
        "lora",
        "lora",
        [
            fake_run(s, rights(n, k, 10 + s), truth, val=0.6, resources={"trainable_pct": 0.3})
            for s, k in enumerate((1800, 1000, 1500))
        ],
    )
    v = analyse([steady, scattered])[0]
    t = v.table.set_index("condition")
    assert bool(t.loc["full"].eligible) and not bool(t.loc["lora"].eligible)
    assert t.loc["lora"].accuracy > t.loc["full"].accuracy  # ahead, but not shown above the majority class
    assert v.recommended == "full" and not v.decided and v.contenders == ["lora"]
    assert any(line.startswith("**Still open**: lora (71.7%)") for line in v.lines), v.lines
    assert v.card.status == "by default" and v.card.would_change.startswith("lora: not yet shown above")
    chosen, _ = rounds.who_gets_a_seed([v], 10, 0.01)
    assert "lora" in chosen
    # without the contender, the pick alone is the decision
    assert analyse([steady])[0].decided
