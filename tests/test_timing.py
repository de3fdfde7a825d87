"""A study's time predicted before it runs: the arithmetic of the model, a real probe of a tiny model, and the dry run
that says it."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import write_study
from typer.testing import CliRunner

from tuneoff.cli.app import app
from tuneoff.config import TrainConfig
from tuneoff.study.spec import load_spec
from tuneoff.study.timing import PLATEAU_SHARE, PROBE_EVERY, PROBE_STEPS, Probe, probe, study_time


def test_a_run_costs_load_steps_evaluations_and_finish():
    p = Probe("c", "lora", 1, load=2.0, cache=0.0, step=0.5, evaluation=3.0, finish=1.0, steps_per_epoch=10)
    stopping = TrainConfig(epochs=3, eval_every=5, patience=3)
    # share 0.65 of the 30-step cap: 20 steps, evaluations at 5, 10, 15, 20 and at the two epoch ends
    assert p.run_seconds(stopping, 0.65) == 2 + 20 * 0.5 + 6 * 3 + 1
    assert p.run_seconds(stopping, 1.0) == 2 + 30 * 0.5 + 9 * 3 + 1  # the bound: every step of the cap
    fixed = TrainConfig(epochs=3, eval_every=5)  # no early stopping: every run trains its whole cap
    assert p.run_seconds(fixed, 0.65) == p.run_seconds(fixed, 1.0)
    assert p.run_seconds(TrainConfig(max_steps=7, patience=None), 0.65) == 2 + 7 * 0.5 + 1 * 3 + 1


def test_a_probe_measures_a_tiny_model_and_the_phases_add_up(tiny_bert, toy_csv, tmp_path):
    variants = {"head": {"method": {"name": "head"}}, "lora": {"method": {"name": "lora", "r": 4}}}  # rates tuned
    spec = load_spec(
        write_study(
            tmp_path, tiny_bert, toy_csv, "timed", seeds=[1, 2], variants=variants, tune={"lr": True, "trials": 2}
        )
    )
    from tuneoff.study.protocol import conditions
    from tuneoff.study.spec import expand

    conds = conditions(spec, expand(spec))
    before = torch.get_num_threads()
    probes = {c.key: probe(c.key, (c.trials or c.runs)[0].config, threads=1) for c in conds}
    assert torch.get_num_threads() == before, "the probe gives the threads back"
    train_rows = 240 * 0.9 * 0.9  # toy.csv: 10% test held out, then 10% of the rest for validation
    for c in conds:
        p = probes[c.key]
        assert p.step > 0 and p.evaluation > 0 and p.load > 0 and p.threads == 1
        assert abs(p.steps_per_epoch - math.ceil(train_rows / 16)) <= 1  # batch 16
    phases = study_time(conds, probes, slots=2)
    assert [(ph.phase, ph.runs) for ph in phases] == [("tuning", 2 * len(conds)), ("final", 2 * len(conds))]
    expected = sum(probes[c.key].run_seconds(r.config.train, PLATEAU_SHARE) for c in conds for r in c.runs) / 2 / 60
    assert phases[1].minutes == pytest.approx(expected) and phases[1].at_most >= phases[1].minutes
    assert not any(p.name.startswith("tuneoff-probe") for p in (tmp_path.parent).iterdir())


def test_the_dry_run_says_how_long_the_study_will_take(tiny_bert, toy_csv, tmp_path):
    spec = write_study(tmp_path, tiny_bert, toy_csv, "timed", seeds=[1, 2])
    out = CliRunner().invoke(
        app, ["run", str(spec), "--dry-run", "--parallel", "1", "--threads", "1"], env={"COLUMNS": "200"}
    )
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert f"(2/2): {PROBE_STEPS} training steps, {PROBE_STEPS // PROBE_EVERY} evaluations" in text
    assert "nothing kept" in text
    assert "time on this machine (each condition probed" in text and "1 run(s) at once, 1 thread(s) each" in text
    assert "final: 4 runs, about" in text and "s a step" in text
    assert not (tmp_path / "results").exists() and not list(tmp_path.glob("runs*")), "a dry run writes no run"
    quick = CliRunner().invoke(app, ["run", str(spec), "--dry-run", "--no-time"], env={"COLUMNS": "200"})
    assert quick.exit_code == 0 and "probing" not in quick.output and "time on this machine" not in quick.output
