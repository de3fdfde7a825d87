"""analysis.power, the chance that a design decides at its margin, against a simulation slice of the statistics the
verdict runs (significance.compare with the seed prior), and its levers by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from tuneoff.analysis import power
from tuneoff.analysis.significance import SEED_PRIOR, compare


def _pair(rng, n, seeds, seed_sd, slope=0.14):
    """Two equal conditions: example chances shared in part (hard examples are hard for both), each seed moving a
    condition's logit so its accuracy's seed sd is about ``seed_sd``."""
    u = rng.beta(4, 1, n)
    out = {}
    for name in ("a", "b"):
        p = np.clip((u + rng.beta(4, 1, n)) / 2, 1e-4, 1 - 1e-4)
        shifts = rng.normal(0, seed_sd / slope, seeds)
        out[name] = (rng.random((n, seeds)) < expit(logit(p)[:, None] + shifts[None, :])).astype(np.float32)
    return out


@pytest.mark.parametrize("seeds, n, margin", [(3, 1000, 0.03), (6, 2000, 0.02)])
def test_the_chance_of_deciding_matches_a_simulation(seeds, n, margin):
    """The share of simulated studies whose lower end (one-sided 5%, as MCB over two candidates) clears -margin, against
    ``power.chance`` from the mean variance parts the same studies measured: within 0.1 (250 studies: Monte Carlo sd
    about 0.03; the normal approximation to a t interval's lower end accounts for the rest)."""
    rng = np.random.default_rng(seeds)
    prior = SEED_PRIOR["accuracy"]
    decided, tests, taus = [], [], []
    for _ in range(250):
        cmp = compare(_pair(rng, n, seeds, prior.sd), prior=prior)
        d = cmp.difference("a", "b")
        decided.append(d["diff"] - power.quantile(0.05, d["df"]) * d["se"] > -margin)
        tests.append(d["test"] * n)
        taus.append((cmp.seeds_of("a").tau2 + cmp.seeds_of("b").tau2) / 2)
    noise = power.Noise(float(np.mean(tests)), float(np.mean(taus)), float(np.mean(taus)), prior.df)
    predicted = power.chance(noise, seeds, n, margin, 0.05)
    assert 0.15 < predicted < 0.95
    assert np.mean(decided) == pytest.approx(predicted, abs=0.1)


def test_the_levers_by_hand():
    """Per-example variance 0.16 and seed variances 1e-4 each (1 point sd): at 1,000 examples the test part alone is
    0.16 / 1000 = 1.6e-4. More seeds shrink only the seed part, more examples only the test part; the chance only grows
    with either, and each lever's answer is the fewest that reaches 80%."""
    noise = power.Noise(0.16, 1e-4, 1e-4, prior_df=0.0)
    assert noise.se(4, 1000) == pytest.approx(np.sqrt(0.16 / 1000 + 2e-4 / 4))
    seeds = power.seeds_for(noise, 4000, 0.02, 0.05)
    assert power.chance(noise, seeds, 4000, 0.02, 0.05) >= 0.8 > power.chance(noise, seeds - 1, 4000, 0.02, 0.05)
    examples = power.examples_for(noise, 10, 0.02, 0.05)
    assert power.chance(noise, 10, examples, 0.02, 0.05) >= 0.8 > power.chance(noise, 10, examples - 1, 0.02, 0.05)
    assert power.seeds_for(noise, 100, 0.01, 0.05) is None, (
        "100 test examples cannot resolve a point, whatever the seeds"
    )
    assert power.examples_for(power.Noise(0.16, 0.01, 0.01), 2, 0.01, 0.05) is None, "10-point seed sd: seeds limit it"
    # the resolvable difference is the margin decided 80% of the time between equal conditions
    margin = power.resolvable(noise, 5, 1000, 0.05)
    assert power.chance(noise, 5, 1000, margin, 0.05) == pytest.approx(0.8, abs=1e-6)


def test_a_study_says_what_it_can_decide_before_it_trains():
    """The built-in default study, planned without training or downloading: one group, 5 conditions x 3 seeds on its
    400 test examples (read from the offline corpus, capped by max_eval_samples; the corpus has 1,277), a resolvable
    difference of several points and little chance of deciding at its 1-point margin; the dry run says so with a
    warning, and with more test examples the plan resolves less."""
    from typer.testing import CliRunner

    import tuneoff
    from tuneoff.cli.app import app

    plan = tuneoff.plan_study("default")
    row = plan.iloc[0]
    assert len(plan) == 1 and (row.conditions, row.seeds, row.examples, row.available) == (5, 3, 400, 1277)
    assert 0.03 < row.resolvable < 0.09 and row.chance < 0.1 and row.margin == 0.01
    wider = tuneoff.plan_study("default", ["base.data.max_eval_samples=1277"]).iloc[0]
    assert wider.resolvable < row.resolvable and wider.chance >= row.chance
    out = " ".join(CliRunner().invoke(app, ["run", "--dry-run", "--no-time"]).output.split())
    assert "5 conditions x 3 seeds on 400 test examples resolve about" in out
    assert "warning: 400 test examples and 3 seeds resolve about" in out and "expect 'cannot decide'" in out
