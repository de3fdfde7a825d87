"""Is the *verdict* right, not only its intervals? A simulation of whole studies through the code a report uses.

``bench/calibration.py`` checks one pair's interval. A user acts on more: the pick, the calls against it, the
"within the margin" calls that choose the recommendation, and the recommendation itself. Each simulated study here
goes through ``tuneoff.analysis.verdict.decide`` (Holm against the baseline, the pick on held-apart validation or on
the final runs, Hsu's MCB against the best, the recommendation by cost), with the seed variances moderated by
``significance.SEED_PRIOR`` as in a study's report. Only the readings of run directories are skipped: each condition's
per-example correctness is drawn here.

The model: test and validation examples have a chance of being right p = (u + v) / 2, u shared by every condition
(hard examples are hard for all), v the condition's own, both Beta(4, 1) (population accuracy about 0.8). A condition
shifts the logit by its quality ``mu``; a seed shifts the whole logit again by ``N(0, s^2)`` (``s`` set so the seed sd
of accuracy is ``seed_sd``), on validation and test alike (a lucky seed is lucky on both: what biases a pick made on
the final runs). Variants: **failing** seeds (with chance ``fail`` a seed drops the condition by ``drop`` points,
otherwise it scatters little: AdaLoRA in the method zoo), **difficulty-dependent** seed effects (a seed moves only the
harder half of the examples, twice as hard), and **shared** seeds (the same seed is the same data order in every
condition: seed shifts correlated 0.5 across conditions). The held-apart pick reads each condition's best of 4 tuning
trials at one tuning seed (each trial moved by its learning rate, 0.5 points of sd), scored on validation.

Per cell, with its Monte Carlo error: among equal conditions the mean of (other - pick) on test, the family-wise rate
of any false "below the best" call, the simultaneous coverage of the MCB intervals; with cheaper candidates exactly at
the margin, the rate of recommending one of them; with failing seeds, the coverage of that condition's own interval and
of its difference from the pick.

    python bench/verdict_simulation.py --reps 2000      # the committed table (bench/results/verdict-simulation-*.md)
    python bench/verdict_simulation.py --reps 100       # a quick look
    python bench/verdict_simulation.py --decide --reps 500   # decide mode against fixed designs
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from tuneoff.analysis.groups import Group
from tuneoff.analysis.settings import AnalysisSettings
from tuneoff.analysis.verdict import (
    GroupVerdict,
    comparisons,
    decide,
    table_of,
)

A, B = 4.0, 1.0
TRIALS, LR_SD = 4, 0.005


@dataclass(frozen=True)
class Cell:
    """One row of the table: a kind of study and its size."""

    name: str
    conditions: int = 4
    seeds: int = 3
    n: int = 1000  # test examples
    n_val: int = 500
    seed_sd: float = 0.01  # accuracy points (fraction) of seed-to-seed sd
    gaps: tuple = ()  # per condition, how far below condition 0 (fraction of accuracy); () = all equal
    costs: tuple = ()  # per condition, relative cost (condition 0 = 1); () = decreasing
    fail: float = 0.0  # the last condition's seeds fail with this chance ...
    drop: float = 0.09  # ... losing this much accuracy
    difficulty: bool = False  # seed effects move only the harder half of the examples
    shared: float = 0.0  # correlation of one seed's shifts across conditions
    held_apart: bool = True  # pick on tuning trials (True) or on the final runs (False)
    margin: float = 0.01
    max_seeds: int | None = None  # decide mode's cap (``--decide``); None: ``--max-seeds``
    extra: dict = field(default_factory=dict)


def _slope(rng) -> float:
    """d accuracy / d logit at 0: E[p (1 - p)]."""
    p = (rng.beta(A, B, 400_000) + rng.beta(A, B, 400_000)) / 2
    return float(np.mean(p * (1 - p)))


SLOPE = _slope(np.random.default_rng(0))


def _shift(gap: float) -> float:
    return -gap / SLOPE


def _seed_shifts(cell: Cell, rng, count: int, common: np.ndarray, last: bool) -> np.ndarray:
    """Each seed's logit shift for one condition; ``common`` the seeds' shared part (shared seeds)."""
    sigma = cell.seed_sd / SLOPE
    if last and cell.fail:
        little = 0.005 / SLOPE
        fails = rng.random(count) < cell.fail
        return rng.normal(0, little, count) - fails * (cell.drop / SLOPE)
    own = rng.normal(0, sigma, count)
    return np.sqrt(1 - cell.shared**2) * own + cell.shared * sigma * common if cell.shared else own


def _correct(rng, u: np.ndarray, mu: float, shifts: np.ndarray, difficulty: bool) -> np.ndarray:
    """(n, seeds) 0/1: each example right with its chance moved by the condition's quality and each seed's shift."""
    p = np.clip((u + rng.beta(A, B, len(u))) / 2, 1e-4, 1 - 1e-4)
    z = logit(p)[:, None] + mu
    effect = shifts[None, :] * ((2.0 * (p < np.median(p)))[:, None] if difficulty else 1.0)
    return (rng.random((len(u), len(shifts))) < expit(z + effect)).astype(np.float32)


def truths(cell: Cell, rng, draws: int = 400_000) -> np.ndarray:
    """Each condition's population accuracy (over examples and seeds), by Monte Carlo."""
    gaps = cell.gaps or (0.0,) * cell.conditions
    out = []
    for c in range(cell.conditions):
        u = rng.beta(A, B, draws)
        shifts = _seed_shifts(replace(cell, shared=0.0), rng, draws, np.zeros(draws), c == cell.conditions - 1)
        p = np.clip((u + rng.beta(A, B, draws)) / 2, 1e-4, 1 - 1e-4)
        effect = shifts * (2.0 * (p < np.median(p)) if cell.difficulty else 1.0)
        out.append(float(np.mean(expit(logit(p) + _shift(gaps[c]) + effect))))
    return np.array(out)


@dataclass
class Drawn:
    """One simulated study's data, for up to ``seeds`` seeds a condition: per condition its (n, seeds) test correctness,
    its per-seed validation accuracy and its best tuning trial's."""

    test: list
    val: list
    trial: list


def draw(cell: Cell, rng, seeds: int | None = None) -> Drawn:
    """Draw one study (``seeds`` seeds a condition, default the cell's)."""
    k, s = cell.conditions, seeds or cell.seeds
    gaps = cell.gaps or (0.0,) * k
    u_test, u_val = rng.beta(A, B, cell.n), rng.beta(A, B, cell.n_val)
    common, tune_common = rng.normal(0, 1, s), rng.normal(0, 1, TRIALS)
    out = Drawn([], [], [])
    for c in range(k):
        last = c == k - 1
        shifts = _seed_shifts(cell, rng, s, common, last)
        out.test.append(_correct(rng, u_test, _shift(gaps[c]), shifts, cell.difficulty))
        out.val.append(_correct(rng, u_val, _shift(gaps[c]), shifts, cell.difficulty).mean(axis=0))
        # the tuning phase: TRIALS rates at one tuning seed, each moved by its rate; the best on validation is kept
        trial_shift = _seed_shifts(cell, rng, 1, tune_common[:1], last)[0] + rng.normal(0, LR_SD / SLOPE, TRIALS)
        out.trial.append(float(_correct(rng, u_val, _shift(gaps[c]), trial_shift, cell.difficulty).mean(axis=0).max()))
    return out


def decide_on(cell: Cell, data: Drawn, seeds: list[int], settings: AnalysisSettings) -> GroupVerdict:
    """Decide a drawn study with tuneoff's own code, condition c on its first ``seeds[c]`` seeds."""
    costs = cell.costs or tuple(1.0 / (1 + c) for c in range(cell.conditions))
    scores, readings = {}, []
    for c in range(cell.conditions):
        test, val, s = data.test[c][:, : seeds[c]], data.val[c][: seeds[c]], seeds[c]
        name = f"c{c}"
        scores[name] = test
        acc = float(test.mean())
        readings.append(
            {
                "condition": name,
                "method": "full" if c == 0 else "lora",
                "seeds": s,
                "accuracy": acc,
                "macro_f1": acc,
                "accuracy_per_seed": " / ".join(f"{a:.3f}" for a in test.mean(axis=0)),
                "macro_f1_per_seed": "",
                "val_accuracy": float(val.mean()),
                "val_macro_f1": float(val.mean()),
                "plateau_accuracy": float(val.mean()),
                "plateau_macro_f1": float(val.mean()),
                "sel_accuracy": data.trial[c] if cell.held_apart else np.nan,
                "sel_macro_f1": data.trial[c] if cell.held_apart else np.nan,
                "pick_seed": 0,
                "lr": 1e-4,
                "collapsed_runs": 0,
                "converged_runs": s,
                "convergence_known": s,
                "not_converged": "",
                "budget_gain": np.nan,
                "stopped_by": "",
                "trainable_params": int(1e6 * costs[c]),
                "trainable_pct": 100.0 if c == 0 else 1.0,
                "trained_mb": 100 * costs[c],
                "peak_memory_mb": 1000 * costs[c],
                "train_seconds": 100 * costs[c],
            }
        )
    truth = np.array(["pos" if i < 0.4 * cell.n else "neg" for i in range(cell.n)])
    baseline = (truth == "neg").astype(np.float32)[:, None]
    cmp = comparisons(scores, baseline, "accuracy", settings)
    table, against = table_of(readings, {"accuracy": cmp}, settings, "neg")
    group = Group(
        "sim", "sim", ["neg", "pos"], [str(i) for i in range(cell.n)], pd.Series(truth), "neg", "training split"
    )
    v = GroupVerdict(
        group, table, pd.DataFrame(), comparisons=cmp, against_baseline=against, metric="accuracy", alpha=settings.alpha
    )
    decide([v], settings)
    return v


def one_study(cell: Cell, rng, settings: AnalysisSettings) -> GroupVerdict:
    """Draw one study and decide it with tuneoff's own code."""
    return decide_on(cell, draw(cell, rng), [cell.seeds] * cell.conditions, settings)


def measure(cell: Cell, reps: int, seed: int = 0) -> dict:
    """The cell's rates over ``reps`` studies, each with its Monte Carlo standard error."""
    rng = np.random.default_rng(seed)
    truth = truths(cell, rng)
    settings = AnalysisSettings(margin=cell.margin)
    equal = not cell.gaps and not cell.fail
    diffs, false_below, covered, wrong_rec, decided, picked_best, default_below = [], [], [], [], [], [], []
    own_cover, pair_cover, flags, pair_hits = [], [], [], []
    for _ in range(reps):
        v = one_study(cell, rng, settings)
        d = (
            v.decisions[v.decisions.against == "pick"]
            if v.decisions is not None and len(v.decisions)
            else pd.DataFrame()
        )
        names = list(v.with_best.condition) if v.with_best is not None else []
        idx = {n: int(n[1:]) for n in names}
        if equal and len(d):
            diffs.append(float(d["diff"].mean()))
        if len(d) and v.best is not None:
            # each comparison's 95% interval against the pick covers the true difference (unbiased pick: about 0.95)
            pick = truth[int(v.best[1:])]
            pair_hits.extend(bool(r.ci_low <= truth[int(r.condition[1:])] - pick <= r.ci_high) for r in d.itertuples())
        if equal and len(d):
            # among equal conditions, any call is false: one differs from the pick (Holm), or is worse than the best
            false_below.append(bool(d.significant.any() or (d.call == "worse").any()))
        if v.with_best is not None and len(v.with_best) > 1:
            wb = v.with_best.set_index("condition")
            ok = True
            for n in names:
                others = [truth[idx[m]] for m in names if m != n]
                target = truth[idx[n]] - max(others)
                ok &= wb.loc[n, "best_low"] - 1e-12 <= target <= wb.loc[n, "best_high"] + 1e-12
            covered.append(ok)
        rec = v.recommended
        if rec is not None:
            gaps = cell.gaps or (0.0,) * cell.conditions
            below = gaps[int(rec[1:])] - min(gaps) >= cell.margin - 1e-12
            decided.append(v.decided)
            wrong_rec.append(bool(v.decided and below))  # a finding that is wrong
            default_below.append(bool(not v.decided and below))
            picked_best.append(int(v.best[1:]) == int(np.argmin(gaps)))
        if cell.fail:
            t = v.table.set_index("condition")
            last = f"c{cell.conditions - 1}"
            # covered, or said plainly (its seeds disagree) and never counted as decided
            flagged = bool(t.loc[last, "seeds_disagree"]) and not (v.decided and v.recommended == last)
            flags.append(flagged)
            own_cover.append(
                bool(t.loc[last, "accuracy_ci_low"] <= truth[-1] <= t.loc[last, "accuracy_ci_high"]) or flagged
            )
            row = d[d.condition == last]
            if len(row) and v.best is not None:
                gap = truth[-1] - truth[int(v.best[1:])]
                pair_cover.append(bool(row.ci_low.iloc[0] <= gap <= row.ci_high.iloc[0]) or flagged)

    def rate(values):
        values = np.asarray(values, dtype=float)
        if not len(values):
            return None, None
        return float(values.mean()), float(np.sqrt(max(values.mean() * (1 - values.mean()), 1e-12) / len(values)))

    def mean(values):
        values = np.asarray(values, dtype=float)
        return (
            (float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))))
            if len(values) > 1
            else (None, None)
        )

    return {
        "cell": cell.name,
        "conditions": cell.conditions,
        "seeds": cell.seeds,
        "n": cell.n,
        "seed_sd": cell.seed_sd,
        "pick": "held-apart" if cell.held_apart else "final runs",
        "reps": reps,
        "mean_other_minus_pick": mean(diffs),
        "familywise_false_below": rate(false_below) if equal else (None, None),
        "mcb_coverage": rate(covered),
        "pick_coverage": rate(pair_hits),
        "wrong_recommendation": rate(wrong_rec),
        "decided": rate(decided),
        "default_below_margin": rate(default_below),
        "picked_true_best": rate(picked_best) if cell.gaps else (None, None),
        "failing_own_coverage": rate(own_cover) if cell.fail else (None, None),
        "failing_flagged": rate(flags) if cell.fail else (None, None),
        "failing_pair_coverage": rate(pair_cover) if cell.fail else (None, None),
    }


def sequential(cell: Cell, reps: int, max_seeds: int, seed: int = 0) -> dict:
    """Decide mode (``tuneoff.study.rounds``) against fixed designs on the same drawn studies: decide mode looks after
    its first ``cell.seeds`` seeds and after every round, at the level ``rounds.look_alpha`` spends, giving one more seed
    to the conditions ``rounds.who_gets_a_seed`` chooses; each fixed design gives every condition S seeds and decides
    once at alpha. Rates with their Monte Carlo errors; runs counted as final runs (the tuning phase is the same)."""
    from tuneoff.study.rounds import look_alpha, who_gets_a_seed

    rng = np.random.default_rng(seed)
    k, first = cell.conditions, cell.seeds
    gaps = cell.gaps or (0.0,) * k
    equal = not cell.gaps and not cell.fail
    fixed_range = range(first, max_seeds + 1)
    seq = {"decided": [], "wrong": [], "false": [], "runs": [], "looks": []}
    fixed = {s: {"decided": [], "wrong": [], "false": []} for s in fixed_range}

    def read(v):
        below = v.recommended is not None and gaps[int(v.recommended[1:])] - min(gaps) >= cell.margin - 1e-12
        d = (
            v.decisions[v.decisions.against == "pick"]
            if v.decisions is not None and len(v.decisions)
            else pd.DataFrame()
        )
        false = equal and len(d) and bool(d.significant.any() or (d.call == "worse").any())
        return bool(v.decided), bool(v.decided and below), bool(false)

    for _ in range(reps):
        data = draw(cell, rng, max_seeds)
        seeds, looks = [first] * k, 0
        while True:
            looks += 1
            level = look_alpha(max(seeds), first, max_seeds, 0.05)
            v = decide_on(cell, data, seeds, AnalysisSettings(margin=cell.margin, alpha=level))
            chosen, _ = who_gets_a_seed([v], max_seeds, cell.margin, look_alpha(max_seeds, first, max_seeds, 0.05))
            if v.decided or not chosen:
                break
            for name in chosen:
                seeds[int(name[1:])] += 1
        for key, value in zip(("decided", "wrong", "false"), read(v)):
            seq[key].append(value)
        seq["runs"].append(sum(seeds))
        seq["looks"].append(looks)
        for s in fixed_range:
            for key, value in zip(
                ("decided", "wrong", "false"),
                read(decide_on(cell, data, [s] * k, AnalysisSettings(margin=cell.margin))),
            ):
                fixed[s][key].append(value)

    def rate(values):
        values = np.asarray(values, dtype=float)
        return float(values.mean()), float(np.sqrt(max(values.mean() * (1 - values.mean()), 1e-12) / len(values)))

    chance = rate(seq["decided"])[0]
    matched = next((s for s in fixed_range if rate(fixed[s]["decided"])[0] >= chance), None)
    runs = float(np.mean(seq["runs"]))
    return {
        "cell": cell.name,
        "conditions": k,
        "first_seeds": first,
        "max_seeds": max_seeds,
        "n": cell.n,
        "seed_sd": cell.seed_sd,
        "margin": cell.margin,
        "reps": reps,
        "decide_mode": {
            "decided": rate(seq["decided"]),
            "wrong_recommendation": rate(seq["wrong"]),
            "false_call": rate(seq["false"]) if equal else None,
            "runs": (runs, float(np.std(seq["runs"]) / np.sqrt(reps))),
            "looks": float(np.mean(seq["looks"])),
        },
        "fixed": {
            s: {
                "decided": rate(f["decided"]),
                "wrong_recommendation": rate(f["wrong"]),
                "false_call": rate(f["false"]) if equal else None,
                "runs": k * s,
            }
            for s, f in fixed.items()
        },
        "matched_fixed_seeds": matched,
        "runs_ratio": runs / (k * matched) if matched else None,
    }


def sequential_cells() -> list[Cell]:
    """Studies where racing and stopping can save runs, and the null ones where the looks could cost errors."""
    mixed = (0.0, 0.0, 0.03, 0.15)  # the best (dearest), a cheaper one as good, one 3 points worse, a head far below
    like_default = (0.0, 0.0, 0.005, 0.05, 0.15, 0.15)  # full, partial, LoRA close; LoRA+ behind; two heads far below
    # Where the test set dominates (2,000 examples, 1 point of seed sd) more seeds settle little, so decide mode can
    # save only what racing drops; where the seeds dominate (10,000 test examples, as a built-in corpus's test split,
    # 2 points of seed sd, as the method zoo's less stable methods) the looks can stop early as well.
    test_bound = {"n": 2000, "seed_sd": 0.01, "margin": 0.02}
    seed_bound = {"n": 10000, "seed_sd": 0.02, "margin": 0.02, "max_seeds": 12}
    return [
        Cell("best, one as good, one worse, one far worse", 4, 3, gaps=mixed, **test_bound),
        Cell("six: three close, one behind, two far below", 6, 3, gaps=like_default, **test_bound),
        Cell("equal conditions", 4, 3, **test_bound),
        Cell("3 cheaper at the margin", 4, 3, gaps=(0.0, 0.02, 0.02, 0.02), **test_bound),
        Cell("seeds dominate: best, one as good, one worse, one far worse", 4, 3, gaps=mixed, **seed_bound),
        Cell("seeds dominate: six, three close", 6, 3, gaps=like_default, **seed_bound),
        Cell("seeds dominate: equal conditions", 4, 3, **seed_bound),
    ]


def cells() -> list[Cell]:
    out = []
    for held in (True, False):
        for k in (2, 4, 8):
            for s in (3, 5):
                for sd in (0.01, 0.03):
                    out.append(Cell(f"equal · {k} conditions", k, s, seed_sd=sd, held_apart=held))
    for s in (3, 5):
        out.append(Cell("one truly better by 3 points", 4, s, gaps=(0.0, 0.03, 0.03, 0.03), seed_sd=0.01))
    for m in (1, 3, 6):
        for s in (3, 5):
            out.append(Cell(f"{m} cheaper at the margin", m + 1, s, seed_sd=0.01, gaps=(0.0,) + (0.01,) * m))
    for s in (2, 3, 5):
        out.append(Cell("failing seeds (chance 0.15, -9 points)", 4, s, n=2000, fail=0.15, drop=0.09))
    for s in (3, 5):
        out.append(Cell("difficulty-dependent seeds", 4, s, seed_sd=0.03, difficulty=True))
        out.append(Cell("shared seeds (rho 0.5)", 4, s, seed_sd=0.03, shared=0.5))
    return out


def _run(args):
    cell, reps, seed = args
    return measure(cell, reps, seed)


def fmt(value) -> str:
    v, e = value
    return "" if v is None else f"{v:.3f} ± {e:.3f}"


def fmt_points(value) -> str:
    v, e = value
    return "" if v is None else f"{100 * v:+.2f} ± {100 * e:.2f}"


def _run_sequential(args):
    cell, reps, seed, max_seeds = args
    return sequential(cell, reps, max_seeds, seed)


def _meta(command: str, stamp: datetime, minutes: float, reps: int) -> dict:
    """What a results file says of its run: the command, when, how long, where, how many studies a row."""
    return {
        "command": command,
        "date": stamp.isoformat(timespec="seconds"),
        "minutes": round(minutes, 1),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "reps": reps,
    }


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def main_decide(args) -> None:
    """``--decide``: decide mode against fixed designs (``sequential``), its own results file."""
    from record import write_result

    t0, stamp, command = time.time(), datetime.now(timezone.utc), " ".join(["python", *sys.argv])
    cells = [c for c in sequential_cells() if not args.only or args.only in c.name]
    jobs = [(cell, args.reps, 2000 + i, cell.max_seeds or args.max_seeds) for i, cell in enumerate(cells)]
    with multiprocessing.Pool(args.workers) as pool:
        rows = pool.map(_run_sequential, jobs)
    minutes = (time.time() - t0) / 60
    lines = [
        f"# Decide mode against fixed designs, simulated ({stamp:%Y-%m-%d})",
        "",
        f"`{command}`; {minutes:.1f} minutes on {platform.machine()} ({args.workers} processes), Python "
        f"{platform.python_version()}; {args.reps} simulated studies per row, each drawn with its max_seeds "
        "a condition and decided by `tuneoff.analysis.verdict.decide`: in decide mode (`tuneoff.study.rounds`: "
        "3 seeds, then a look after each round of one more seed for the conditions `who_gets_a_seed` chooses, at "
        "the level `look_alpha` spends) and in every fixed design of 3 to max_seeds seeds a condition, on the same "
        "draws. `matched` is the fewest fixed seeds whose chance of deciding is at least decide mode's; `runs ratio` "
        "is decide mode's mean final runs over that design's. Rates with their Monte Carlo standard errors (±). Each "
        "study names its test examples, seed sd and max_seeds; the margin is 2 points throughout.",
        "",
        "| study | decide mode: decided | wrong recommendation | false call | runs | looks | fixed (seeds: decided, "
        "runs) | matched | runs ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["decide_mode"]
        fixed = "; ".join(f"{s}: {f['decided'][0]:.2f}, {f['runs']}" for s, f in r["fixed"].items())
        false = fmt(d["false_call"]) if d["false_call"] else ""
        ratio = "" if r["runs_ratio"] is None else f"{r['runs_ratio']:.2f}"
        lines.append(
            f"| {r['cell']} ({r['n']:,} test, {100 * r['seed_sd']:g}-point seed sd, max_seeds {r['max_seeds']}) "
            f"| {fmt(d['decided'])} | {fmt(d['wrong_recommendation'])} | {false} | "
            f"{d['runs'][0]:.1f} ± {d['runs'][1]:.1f} | {d['looks']:.1f} | {fixed} | {r['matched_fixed_seeds']} | "
            f"{ratio} |"
        )
    lines += [
        "",
        "Fixed designs' error rates on the same draws (wrong recommendation; false call where every condition "
        "is equal):",
        "",
    ]
    for r in rows:
        lines.append(
            f"- {r['cell']}: "
            + "; ".join(
                f"{s} seeds {fmt(f['wrong_recommendation'])}"
                + (f", false {fmt(f['false_call'])}" if f["false_call"] else "")
                for s, f in r["fixed"].items()
            )
        )
    write_result(
        Path(args.out) / f"decide-simulation-{_slug(args.only) + '-' if args.only else ''}{stamp:%Y%m%d}",
        {"meta": _meta(command, stamp, minutes, args.reps), "rows": rows},
        lines,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--decide", action="store_true", help="decide mode against fixed designs (its own file)")
    parser.add_argument("--max-seeds", type=int, default=8, help="with --decide: decide mode's max_seeds")
    parser.add_argument("--only", default="", help="with --decide: only the studies whose name holds this text")
    args = parser.parse_args()
    if args.decide:
        main_decide(args)
        return
    t0, stamp, command = time.time(), datetime.now(timezone.utc), " ".join(["python", *sys.argv])
    jobs = [(cell, args.reps, 1000 + i) for i, cell in enumerate(cells())]
    with multiprocessing.Pool(args.workers) as pool:
        rows = pool.map(_run, jobs)
    minutes = (time.time() - t0) / 60
    lines = [
        f"# The verdict, simulated ({stamp:%Y-%m-%d})",
        "",
        f"`{command}`; {minutes:.1f} minutes on {platform.machine()} ({args.workers} processes), Python "
        f"{platform.python_version()}, numpy {np.__version__}; {args.reps} simulated studies per row, each decided by "
        "`tuneoff.analysis.verdict.decide` (margin 1 point, alpha 0.05). Every figure is a mean or a rate with its "
        "Monte Carlo standard error (±). The model is in the script's docstring.",
        "",
        "## Equal conditions: is the comparison with the pick unbiased, and are false calls rare?",
        "",
        "`other − pick`: the mean test difference of every other condition against the pick (points; 0 when "
        "unbiased). `false below`: the share of studies with any condition called below the best (target at most "
        "0.05). `MCB coverage`: all of a study's intervals of the distance from the best cover the truth at once "
        "(target at least 0.95); `coverage against the pick`: the share of 95% intervals of (other − pick) that cover the "
        "true difference (about 0.95 when the pick shares no luck with them).",
        "",
        "| pick on | conditions | seeds | seed sd (points) | other − pick (points) | false below | MCB coverage | "
        "coverage against the pick |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["cell"].startswith("equal"):
            lines.append(
                f"| {r['pick']} | {r['conditions']} | {r['seeds']} | {100 * r['seed_sd']:g} | "
                f"{fmt_points(r['mean_other_minus_pick'])} | {fmt(r['familywise_false_below'])} | "
                f"{fmt(r['mcb_coverage'])} | {fmt(r['pick_coverage'])} |"
            )
    lines += [
        "",
        "## The recommendation",
        "",
        "`wrong recommendation`: the verdict calls its recommendation a finding (`decided`) and it is truly worse "
        "than the best by the margin or more (target at most 0.05); `default below the margin`: the recommendation "
        "is a default for lack of evidence (the pick) and is a condition at the margin; "
        "`picked the best`: the pick is the truly best condition. The best condition is the most expensive; "
        "cheaper candidates sit exactly at the margin below it.",
        "",
        "| study | seeds | wrong recommendation | decided | default below the margin | picked the best | MCB coverage |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "margin" in r["cell"] or "better" in r["cell"]:
            lines.append(
                f"| {r['cell']} | {r['seeds']} | {fmt(r['wrong_recommendation'])} | {fmt(r['decided'])} | "
                f"{fmt(r['default_below_margin'])} | {fmt(r['picked_true_best'])} | {fmt(r['mcb_coverage'])} |"
            )
    lines += [
        "",
        "## Seeds that do not behave",
        "",
        "Failing seeds: the last of 4 conditions loses 9 points in a seed with chance 0.15 and otherwise scatters "
        "0.5 points (its total seed sd is about 3 points), 2,000 test examples; `own coverage` is its accuracy "
        "interval's coverage of its population accuracy, `against the pick` its difference's, each counted as "
        "met where the verdict flags the condition (its seeds disagree) and never decides it (target at least "
        "0.90); `flagged`: the share of studies where it does. Difficulty-dependent and shared seeds: equal "
        "conditions, 3 points of seed sd.",
        "",
        "| study | seeds | own coverage (or flagged) | against the pick (or flagged) | flagged | "
        "other − pick (points) | false below | MCB coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["cell"].startswith(("failing", "difficulty", "shared")):
            lines.append(
                f"| {r['cell']} | {r['seeds']} | {fmt(r['failing_own_coverage'])} | "
                f"{fmt(r['failing_pair_coverage'])} | {fmt(r['failing_flagged'])} | "
                f"{fmt_points(r['mean_other_minus_pick'])} | "
                f"{fmt(r['familywise_false_below'])} | {fmt(r['mcb_coverage'])} |"
            )
    from record import write_result

    write_result(
        Path(args.out) / f"verdict-simulation-{stamp:%Y%m%d}",
        {"meta": _meta(command, stamp, minutes, args.reps), "rows": rows},
        lines,
    )


if __name__ == "__main__":
    main()
