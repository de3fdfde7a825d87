"""Are the verdict's intervals and tests calibrated at the seed counts people use? A simulation of null studies.

Each simulated study has ``conditions`` conditions scored on the same ``n`` test examples with ``seeds`` seeds each.
Example i has a chance p_c,i of being right for condition c: p_c,i = (u_i + v_c,i) / 2 with u (shared difficulty)
and v (the condition's own) drawn from Beta(4, 1), so conditions agree on hard examples as real methods do and every
condition has the same population accuracy (0.8): no true difference. A seed moves a condition's whole logit by
N(0, s^2), s chosen so that the seed-to-seed sd of the accuracy is ``seed_sd``; each prediction is then a Bernoulli
draw (the seed x example interaction). Condition 0 against condition 1 is tested with tuneoff's own statistics
(``tuneoff.analysis.significance.compare``, seed variance per condition): the false-positive rate (p < 0.05)
should be at most about 5% and the 95% interval should cover the true difference (0) about 95% of the time. A
second run adds a true gap (condition 1 lower by ``gap`` in v's mean) to check coverage away from the null.
A third table gives one condition of the group seeds that scatter far more than the others' (8 points of seed sd
against 1, as prompt tuning's against LoRA's in the method zoo): the coverage of the true difference (the seed
spread moves the population accuracy a little, through the logit) between two stable conditions and between a
stable and the erratic one, with the seed variance per condition (tuneoff's) and pooled over the group (the first
version's, for comparison). A fourth gives two conditions trained with the same seeds and as alike as LoRA and DoRA
(their seeds flip the same examples), with the seed variances moderated by the prior and without it. Every
comparison uses the seed-variance prior a study's report uses (``significance.SEED_PRIOR``). A fifth gives null studies on macro-F1 (``analysis.metric: macro_f1``) on an imbalanced
3-class task, and a sixth one condition's own intervals (its accuracy, its rarest class's F1) against the
population values.

    python bench/calibration.py --reps 2000          # the full table (a few minutes on 2 cores)
    python bench/calibration.py --reps 200 --quick   # a slice
    python bench/calibration.py --only-single        # the sixth table alone
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.special import expit, logit

from tuneoff.analysis.significance import (
    ASSUMED_SEED_SD,
    SEED_PRIOR,
    Comparisons,
    class_f1_values,
    compare,
    macro_f1_values,
)

PRIOR, F1_PRIOR = SEED_PRIOR["accuracy"], SEED_PRIOR["macro_f1"]  # as a study's report moderates seed variances

A, B = 4.0, 1.0


def _slope(rng) -> float:
    """d accuracy / d logit shift at 0: E[p (1 - p)] for p = (u + v) / 2."""
    p = (rng.beta(A, B, 200_000) + rng.beta(A, B, 200_000)) / 2
    return float(np.mean(p * (1 - p)))


def true_mean(rng, sigma: float, shift: float = 0.0, draws: int = 400_000) -> float:
    """Population accuracy of a condition: over examples and seeds (Monte Carlo)."""
    p = (rng.beta(A, B, draws) + np.clip(rng.beta(A, B, draws) - shift, 0.01, 0.999)) / 2
    if sigma:
        p = expit(logit(np.clip(p, 1e-4, 1 - 1e-4)) + rng.normal(0, sigma, draws))
    return float(np.mean(p))


def simulate(
    n: int,
    seeds: int,
    seed_sd: float,
    reps: int,
    conditions: int = 4,
    shift: float = 0.0,
    rng: np.random.Generator | None = None,
    slope: float | None = None,
) -> dict:
    """False-positive rate (condition 0 vs 1, p < 0.05) and the 95% interval's coverage of the true difference."""
    rng = rng or np.random.default_rng(0)
    slope = slope or _slope(rng)
    sigma = seed_sd / slope
    truth = true_mean(rng, sigma) - true_mean(rng, sigma, shift) if shift else 0.0
    rejected = covered = 0
    for _ in range(reps):
        u = rng.beta(A, B, n)
        mats = {}
        for c in range(conditions):
            v = rng.beta(A, B, n)
            if c == 1 and shift:
                v = np.clip(v - shift, 0.01, 0.999)
            p = np.clip((u + v) / 2, 1e-4, 1 - 1e-4)
            shifts = rng.normal(0, sigma, seeds) if sigma else np.zeros(seeds)
            q = expit(logit(p)[:, None] + shifts[None, :])
            mats[f"c{c}"] = (rng.random((n, seeds)) < q).astype(np.float32)
        d = compare(mats, prior=PRIOR).difference("c0", "c1")
        rejected += d["p_value"] < 0.05
        covered += d["ci_low"] <= truth <= d["ci_high"]
    return {
        "n": n,
        "seeds": seeds,
        "seed_sd": seed_sd,
        "shift": shift,
        "true_diff": truth,
        "reps": reps,
        "false_positive_rate": rejected / reps if not shift else None,
        "coverage": covered / reps,
    }


class GroupPooled(Comparisons):
    """The first version's statistics: one seed variance pooled over the whole group, for every comparison."""

    def seeds_of(self, name):
        return self.seeds


def _draw(rng, u, sigma: float, seeds: int) -> np.ndarray:
    p = np.clip((u + rng.beta(A, B, len(u))) / 2, 1e-4, 1 - 1e-4)
    shifts = rng.normal(0, sigma, seeds) if sigma else np.zeros(seeds)
    return (rng.random((len(u), seeds)) < expit(logit(p)[:, None] + shifts[None, :])).astype(np.float32)


def simulate_erratic(
    n: int, seeds: int, conditions: int, reps: int, rng, slope: float, stable_sd: float = 0.01, erratic_sd: float = 0.08
) -> dict:
    """Coverage of the true difference, stable vs stable (c0 - c1) and stable vs erratic (c0 - last), per-condition
    seed variance against the group-pooled one."""
    sds = [stable_sd] * (conditions - 1) + [erratic_sd]
    truth = {c: true_mean(rng, sd / slope, draws=2_000_000) for c, sd in enumerate(sds)}
    last = conditions - 1
    hits = {key: 0 for key in ("stable", "erratic", "stable_pooled", "erratic_pooled")}
    for _ in range(reps):
        u = rng.beta(A, B, n)
        mats = {f"c{c}": _draw(rng, u, sd / slope, seeds) for c, sd in enumerate(sds)}
        cmp = compare(mats, prior=PRIOR)
        pooled = GroupPooled(cmp.mats, cmp.seeds, cmp.fixed, cmp.assumed_sd, cmp.prior)
        for suffix, stats in (("", cmp), ("_pooled", pooled)):
            for key, other in (("stable", 1), ("erratic", last)):
                d = stats.difference("c0", f"c{other}")
                hits[key + suffix] += d["ci_low"] <= truth[0] - truth[other] <= d["ci_high"]
    return {
        "n": n,
        "seeds": seeds,
        "conditions": conditions,
        "reps": reps,
        "stable_sd": stable_sd,
        "erratic_sd": erratic_sd,
        **{f"coverage_{k}": v / reps for k, v in hits.items()},
    }


def simulate_correlated(n: int, seeds: int, seed_sd: float, rho: float, reps: int, rng, slope: float) -> dict:
    """Two conditions of one population accuracy trained with the same seeds, as alike as LoRA and DoRA: the same
    example chances (u + v) / 2, seed shifts correlated by ``rho``, and each prediction the same random draw as the
    other's with chance ``rho`` (a seed flips the same examples in both). False-positive rate, coverage of the true 0
    and the median half-width of the 95% interval, with the seed variances moderated by the prior (tuneoff's) and
    without it (each condition's own estimate alone)."""
    sigma = seed_sd / slope
    hits = {"fp": 0, "covered": 0, "fp_unmoderated": 0, "covered_unmoderated": 0}
    widths: dict[str, list] = {"": [], "_unmoderated": []}
    for _ in range(reps):
        p = np.clip((rng.beta(A, B, n) + rng.beta(A, B, n)) / 2, 1e-4, 1 - 1e-4)
        za = rng.normal(0, 1, seeds)
        zb = rho * za + np.sqrt(1 - rho**2) * rng.normal(0, 1, seeds)
        ra = rng.random((n, seeds))
        rb = np.where(rng.random((n, seeds)) < rho, ra, rng.random((n, seeds)))
        mats = {
            name: (r < expit(logit(p)[:, None] + sigma * z[None, :])).astype(np.float32)
            for name, r, z in (("a", ra, za), ("b", rb, zb))
        }
        for suffix, stats in (("", compare(mats, prior=PRIOR)), ("_unmoderated", compare(mats))):
            d = stats.difference("a", "b")
            hits["fp" + suffix] += d["p_value"] < 0.05
            hits["covered" + suffix] += d["ci_low"] <= 0 <= d["ci_high"]
            widths[suffix].append((d["ci_high"] - d["ci_low"]) / 2)
    return {
        "n": n,
        "seeds": seeds,
        "seed_sd": seed_sd,
        "rho": rho,
        "reps": reps,
        **{k: v / reps for k, v in hits.items()},
        **{f"half_width{k}": float(np.median(v)) for k, v in widths.items()},
    }


def _class_predictions(rng, truth: np.ndarray, sigma: float, seeds: int, classes: int | None = None) -> np.ndarray:
    """(n, seeds) class predictions: example i right with chance (u_i + v_i) / 2 as above, a seed moving the whole
    logit by N(0, sigma^2); a wrong prediction is another of the ``classes`` classes drawn uniformly."""
    n = len(truth)
    right = _draw(rng, rng.beta(A, B, n), sigma, seeds).astype(bool)
    k = classes or int(truth.max()) + 1
    wrong = (truth[:, None] + rng.integers(1, k, (n, seeds))) % k
    return np.where(right, truth[:, None], wrong)


def simulate_macro_f1(n: int, seeds: int, seed_sd: float, reps: int, rng, slope: float, shares=(0.6, 0.3, 0.1)) -> dict:
    """Null studies on macro-F1 (``analysis.metric: macro_f1``): two conditions from the same process on an
    imbalanced 3-class task (class shares ``shares``), each seed's macro-F1 linearised per example
    (``significance.macro_f1_values``). The true difference is 0: false-positive rate and coverage of 0."""
    rejected = covered = 0
    for _ in range(reps):
        truth = rng.choice(len(shares), n, p=shares)
        mats = {}
        for name in ("a", "b"):
            pred = _class_predictions(rng, truth, seed_sd / slope, seeds)
            mats[name] = np.stack([macro_f1_values(truth, pred[:, s], len(shares)) for s in range(seeds)], axis=1)
        d = compare(mats, prior=F1_PRIOR).difference("a", "b")
        rejected += d["p_value"] < 0.05
        covered += d["ci_low"] <= 0 <= d["ci_high"]
    return {
        "n": n,
        "seeds": seeds,
        "seed_sd": seed_sd,
        "reps": reps,
        "shares": list(shares),
        "false_positive_rate": rejected / reps,
        "coverage": covered / reps,
    }


def _rare_class_truth(sigma: float, shares, rng, draws: int = 200_000) -> tuple[float, float]:
    """Population accuracy and the rarest class's population F1 of ``_class_predictions``, each averaged over seeds.
    For a seed shift z, a(z) = E_p[expit(logit p + z)] is the chance of being right on any example; the rarest
    class k (share s) then has TP = s a, FN = s (1 - a) and FP = (1 - s)(1 - a) / (K - 1) (a wrong prediction is
    another class at random), so F1_k(z) = 2 TP / (2 TP + FP + FN); z is integrated on a Gauss-Hermite grid."""
    p = np.clip((rng.beta(A, B, draws) + rng.beta(A, B, draws)) / 2, 1e-4, 1 - 1e-4)
    nodes, weights = np.polynomial.hermite_e.hermegauss(41) if sigma else (np.zeros(1), np.ones(1))
    weights = weights / weights.sum()
    a = np.array([expit(logit(p) + sigma * z).mean() for z in nodes])
    share, k = min(shares), len(shares)
    tp, fn, fp = share * a, share * (1 - a), (1 - share) * (1 - a) / (k - 1)
    return float(weights @ a), float(weights @ (2 * tp / (2 * tp + fp + fn)))


def simulate_single(n: int, seeds: int, seed_sd: float, reps: int, rng, slope: float, shares=(0.6, 0.3, 0.1)) -> dict:
    """One condition's own 95% intervals (the report's accuracy column and its per-class F1 table) on a 3-class task:
    how often they cover the population accuracy and the rarest class's population F1 (both averaged over seeds),
    and their median half-widths."""
    sigma = seed_sd / slope
    truth_acc, truth_f1 = _rare_class_truth(sigma, shares, rng)
    rare = int(np.argmin(shares))
    hits, widths = {"accuracy": 0, "rare_f1": 0}, {"accuracy": [], "rare_f1": []}
    for _ in range(reps):
        truth = rng.choice(len(shares), n, p=shares)
        pred = _class_predictions(rng, truth, sigma, seeds, classes=len(shares))
        mats = {
            "accuracy": (pred == truth[:, None]).astype(np.float32),
            "rare_f1": np.stack(
                [class_f1_values(truth, pred[:, s], len(shares))[:, rare] for s in range(seeds)], axis=1
            ),
        }
        for key, target in (("accuracy", truth_acc), ("rare_f1", truth_f1)):
            low, high = compare({key: mats[key]}, prior=PRIOR if key == "accuracy" else F1_PRIOR).interval(key)
            hits[key] += low <= target <= high
            widths[key].append((high - low) / 2)
    return {
        "n": n,
        "seeds": seeds,
        "seed_sd": seed_sd,
        "reps": reps,
        "shares": list(shares),
        "true_accuracy": truth_acc,
        "true_rare_f1": truth_f1,
        **{f"coverage_{k}": v / reps for k, v in hits.items()},
        **{f"half_width_{k}": float(np.median(v)) for k, v in widths.items()},
    }


def _single_lines(single: list[dict], reps: int) -> list[str]:
    lines = [
        "## One condition's own intervals (the accuracy column, the per-class F1 table)",
        "",
        f"{reps} simulated studies per row: one condition on a 3-class task (60 / 30 / 10% of the test examples, a "
        "wrong prediction another class at random), the seeds moving its logit so that accuracy's seed sd is "
        "`seed sd`. Coverage (target 0.95) of the population value by the condition's 95% interval "
        "(`Comparisons.interval`: over seeds and test examples, seed variance moderated by the prior), for its "
        "accuracy and for the rarest class's F1 (linearised per example, `significance.class_f1_values`, as the "
        "report's per-class table); with one seed the seed sd is assumed "
        f"({100 * ASSUMED_SEED_SD:g} points).",
        "",
        "| test examples | seeds | seed sd (points) | accuracy: coverage | median half-width (points) | "
        "rarest class F1: coverage | median half-width (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in single:
        lines.append(
            f"| {r['n']:,} | {r['seeds']} | {100 * r['seed_sd']:g} | {r['coverage_accuracy']:.3f} | "
            f"{100 * r['half_width_accuracy']:.1f} | {r['coverage_rare_f1']:.3f} | "
            f"{100 * r['half_width_rare_f1']:.1f} |"
        )
    return lines


def _single_table(ns, reps: int, rng, slope: float) -> list[dict]:
    single = []
    for n, s, sd in itertools.product(ns, (1, 2, 3, 5), (0.0, 0.03)):
        single.append(simulate_single(n, s, sd, reps, rng, slope))
        r = single[-1]
        print(
            f"single n={n:5d} seeds={s} sd={sd:.2f}: coverage accuracy {r['coverage_accuracy']:.3f}, rarest "
            f"class F1 {r['coverage_rare_f1']:.3f}",
            flush=True,
        )
    return single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a slice: n 400 and 5,000, 1/2/5 seeds, sd 0/3/5")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--only-single", action="store_true", help="only the table of one condition's own intervals")
    args = parser.parse_args()
    ns, seed_counts, sds = (
        ((400, 5000), (1, 2, 5), (0.0, 0.03, 0.05))
        if args.quick
        else ((400, 1000, 5000), (1, 2, 3, 5), (0.0, 0.01, 0.03, 0.05))
    )
    rng = np.random.default_rng(20261129)
    slope = _slope(rng)
    if args.only_single:
        _write_single(args, ns, rng, slope)
        return
    t0, rows = time.time(), []
    for n, s, sd in itertools.product(ns, seed_counts, sds):
        null = simulate(n, s, sd, args.reps, rng=rng, slope=slope)
        gap = simulate(n, s, sd, args.reps, shift=0.06, rng=rng, slope=slope)  # about 3 accuracy points
        rows.append({**null, "coverage_with_gap": gap["coverage"], "gap": gap["true_diff"]})
        print(
            f"n={n:5d} seeds={s} sd={sd:.2f}: false positives {null['false_positive_rate']:.3f}, coverage "
            f"{null['coverage']:.3f}, with a {100 * gap['true_diff']:.1f}-point gap {gap['coverage']:.3f}",
            flush=True,
        )
    erratic = []
    for n, s, k in itertools.product(ns[:1] + ns[-1:], (2, 3, 5), (4, 14)):
        erratic.append(simulate_erratic(n, s, k, args.reps // 2, rng, slope))
        e = erratic[-1]
        print(
            f"n={n:5d} seeds={s} conditions={k}, one erratic: coverage stable {e['coverage_stable']:.3f} "
            f"(pooled {e['coverage_stable_pooled']:.3f}), erratic {e['coverage_erratic']:.3f} "
            f"(pooled {e['coverage_erratic_pooled']:.3f})",
            flush=True,
        )
    correlated = []
    for s, sd, rho in itertools.product((2, 3, 5), (0.01, 0.03), (0.0, 0.9, 0.99)):
        correlated.append(simulate_correlated(1000, s, sd, rho, args.reps // 2, rng, slope))
        c = correlated[-1]
        print(
            f"correlated seeds={s} sd={sd:.2f} rho={rho}: false positives {c['fp']:.3f} (unmoderated "
            f"{c['fp_unmoderated']:.3f}), half-width {100 * c['half_width']:.2f} (unmoderated "
            f"{100 * c['half_width_unmoderated']:.2f}) points",
            flush=True,
        )
    macro = []
    for n, s, sd in itertools.product(ns[:1] + ns[-1:], (2, 3, 5), (0.0, 0.03)):
        macro.append(simulate_macro_f1(n, s, sd, args.reps // 2, rng, slope))
        m = macro[-1]
        print(
            f"macro-F1 n={n:5d} seeds={s} sd={sd:.2f}: false positives {m['false_positive_rate']:.3f}, coverage "
            f"{m['coverage']:.3f}",
            flush=True,
        )
    single = _single_table(ns, args.reps // 2, rng, slope)
    minutes = (time.time() - t0) / 60
    mc = float(np.sqrt(0.05 * 0.95 / args.reps))
    stamp = datetime.now(timezone.utc)
    command = " ".join(["python", *sys.argv])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"calibration-{stamp:%Y%m%d}{'-quick' if args.quick else ''}"
    meta = {**_meta(command, stamp, minutes), "reps": args.reps, "monte_carlo_sd_at_5pct": mc}
    (out / f"{name}.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": rows,
                "erratic": erratic,
                "correlated": correlated,
                "macro_f1": macro,
                "single": single,
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        f"# Calibration of the verdict's statistics ({stamp:%Y-%m-%d})",
        "",
        f"`{command}`; {minutes:.1f} minutes on {meta['machine']}, Python {meta['python']}, numpy {np.__version__}; "
        f"{args.reps} simulated studies per row (Monte Carlo sd of a 5% rate: {100 * mc:.1f} points; of a 95% "
        f"coverage: the same). Each study: 4 conditions, the same population accuracy (0.8), seeds moving a "
        "condition's logit so that its accuracy's seed-to-seed sd is `seed sd`; condition 0 vs 1 tested with "
        "`tuneoff.analysis.significance` (t / Welch-Satterthwaite, seed variance per condition). With one "
        f"seed per condition the seed variance cannot be measured and is assumed ({100 * ASSUMED_SEED_SD:g} points). "
        "`coverage with gap`: the 95% interval's coverage when condition 1 is truly lower (by the `gap` column).",
        "",
        "| test examples | seeds | seed sd (points) | false-positive rate | coverage (null) | gap (points) | coverage with gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['seeds']} | {100 * r['seed_sd']:g} | {r['false_positive_rate']:.3f} | "
            f"{r['coverage']:.3f} | {100 * r['gap']:.1f} | {r['coverage_with_gap']:.3f} |"
        )
    lines += [
        "",
        "## One erratic condition in the group",
        "",
        f"{args.reps // 2} simulated studies per row: every condition's seeds move its accuracy by 1 point (sd) except "
        "the last one's, by 8. Coverage of the true difference by the 95% interval (target 0.95), with the seed "
        "variance estimated per condition (tuneoff) and pooled over the group (the first version).",
        "",
        "| test examples | seeds | conditions | stable vs stable | (group-pooled) | stable vs erratic | (group-pooled) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in erratic:
        lines.append(
            f"| {e['n']:,} | {e['seeds']} | {e['conditions']} | {e['coverage_stable']:.3f} | "
            f"{e['coverage_stable_pooled']:.3f} | {e['coverage_erratic']:.3f} | {e['coverage_erratic_pooled']:.3f} |"
        )
    lines += [
        "",
        "## Two conditions trained with the same seeds, as alike as LoRA and DoRA",
        "",
        f"{args.reps // 2} simulated null studies per row, 1,000 test examples: two conditions with the same example "
        "chances, their seed shifts correlated by `rho` and each prediction the same random draw as the other's "
        "with chance `rho` (a seed flips the same examples in both). The seed variances moderated by the prior "
        "(tuneoff) and without it (each condition's own estimate): false-positive rate, coverage and the median "
        "half-width of the 95% interval.",
        "",
        "| seeds | seed sd (points) | rho | false-positive rate | (unmoderated) | coverage | (unmoderated) | "
        "median half-width (points) | (unmoderated) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in correlated:
        lines.append(
            f"| {c['seeds']} | {100 * c['seed_sd']:g} | {c['rho']:g} | {c['fp']:.3f} | {c['fp_unmoderated']:.3f} | "
            f"{c['covered']:.3f} | {c['covered_unmoderated']:.3f} | {100 * c['half_width']:.2f} | "
            f"{100 * c['half_width_unmoderated']:.2f} |"
        )
    lines += [
        "",
        "## Macro-F1 (analysis.metric: macro_f1)",
        "",
        f"{args.reps // 2} simulated null studies per row: two conditions from the same process on a 3-class task "
        "whose classes are 60 / 30 / 10% of the test examples (a wrong prediction another class at random), each "
        "seed's macro-F1 linearised per example (`significance.macro_f1_values`), the seeds moving the logit so "
        "that accuracy's seed sd is `seed sd`. Target: at most 5% false positives, 95% coverage of the true 0.",
        "",
        "| test examples | seeds | seed sd (points of accuracy) | false-positive rate | coverage |",
        "|---|---|---|---|---|",
    ]
    for m in macro:
        lines.append(
            f"| {m['n']:,} | {m['seeds']} | {100 * m['seed_sd']:g} | {m['false_positive_rate']:.3f} | "
            f"{m['coverage']:.3f} |"
        )
    lines += ["", *_single_lines(single, args.reps // 2)]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"written to {out / name}.md/.json ({minutes:.1f} min)")


def _meta(command: str, stamp: datetime, minutes: float) -> dict:
    """What a results file says of the run that wrote it."""
    return {
        "command": command,
        "date": stamp.isoformat(timespec="seconds"),
        "minutes": round(minutes, 1),
        "machine": f"{platform.machine()} {platform.processor()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "assumed_seed_sd": ASSUMED_SEED_SD,
        "seed_prior": {"accuracy": vars(PRIOR), "macro_f1": vars(F1_PRIOR)},
    }


def _write_single(args, ns, rng, slope) -> None:
    """``--only-single``: the one table, in a file of its own (the others' random streams come before it)."""
    t0 = time.time()
    single = _single_table(ns, args.reps // 2, rng, slope)
    minutes, stamp, command = (time.time() - t0) / 60, datetime.now(timezone.utc), " ".join(["python", *sys.argv])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"calibration-single-{stamp:%Y%m%d}{'-quick' if args.quick else ''}"
    meta = {**_meta(command, stamp, minutes), "reps": args.reps // 2}
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "single": single}, indent=2) + "\n")
    head = [
        f"# Calibration of one condition's intervals ({stamp:%Y-%m-%d})",
        "",
        f"`{command}`; {minutes:.1f} minutes on {meta['machine']}, Python {meta['python']}, numpy {np.__version__}. "
        "The other tables (differences, erratic and correlated seeds, macro-F1) are in the calibration file of the "
        "same date or before; the full run (without `--only-single`) writes this table after them.",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(head + _single_lines(single, args.reps // 2)) + "\n")
    print(f"written to {out / name}.md/.json ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
