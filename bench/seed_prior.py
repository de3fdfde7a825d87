"""How much do a method's seeds scatter? The prior the verdict's seed variance is moderated with, fitted on every
committed study.

Each committed result (``studies/results/*.csv``) lists each condition's test accuracy and macro-F1 per seed. A
condition's sample variance s^2 over its S seeds, on d = S - 1 degrees of freedom, is read as Smyth's (2004, "Linear
models and empirical Bayes methods for assessing differential expression in microarray experiments") hierarchical
model: s^2 | sigma^2 ~ sigma^2 chi2_d / d with 1 / sigma^2 ~ chi2_d0 / (d0 s0^2), so that s^2 / s0^2 ~ F(d, d0).
(s0, d0) are fitted by maximum likelihood over every condition of every committed study. The verdict then uses the
posterior (moderated) seed variance ``(d tau2 + d0 s0^2) / (d + d0)`` on ``d + d0`` degrees of freedom
(``tuneoff.analysis.significance.SEED_PRIOR``): two seeds that land close no longer read as "no seed variance", and a
seed that fails now and then, unseen in most draws of three, is still allowed for.

A per-seed accuracy's variance holds the seed x example interaction too (a seed flipping single test examples), which
the verdict's own estimator removes; the prior fitted here is therefore a little wide: conservative. The largest seed
sd measured is what a condition with one seed is assumed to have (``analysis.assumed_seed_sd``).

    python bench/seed_prior.py                      # writes bench/results/seed-prior-<date>.md/.json
"""

from __future__ import annotations

import argparse
import glob
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from record import write_result
from scipy import optimize, stats

ROOT = Path(__file__).resolve().parent.parent


def seed_variances(files: list[str], column: str) -> pd.DataFrame:
    """One row per condition with two or more seeds: study, condition, method, seeds, sample variance (fraction^2)."""
    rows = []
    for f in sorted(files):
        frame = pd.read_csv(f)
        if column not in frame:
            continue
        for r in frame.itertuples():
            cell = getattr(r, column)
            if not isinstance(cell, str):
                continue
            values = np.array([float(x) for x in cell.split(" / ")])
            if len(values) > 1:
                rows.append(
                    {
                        "study": Path(f).stem,
                        "condition": r.condition,
                        "method": r.method,
                        "seeds": len(values),
                        "var": float(values.var(ddof=1)),
                    }
                )
    return pd.DataFrame(rows)


def fit(frame: pd.DataFrame) -> dict:
    """Maximum-likelihood (s0, d0) of s^2 / s0^2 ~ F(d, d0); a variance of exactly 0 is read as half the smallest
    non-zero one (three printed decimals round small spreads to 0)."""
    floor = frame["var"][frame["var"] > 0].min() / 2
    var, d = np.maximum(frame["var"].to_numpy(), floor), (frame.seeds - 1).to_numpy(dtype=float)

    def nll(theta):
        log_s0sq, log_d0 = theta
        s0sq, d0 = np.exp(log_s0sq), np.exp(log_d0)
        return -float(np.sum(stats.f.logpdf(var / s0sq, d, d0) - log_s0sq))

    start = [np.log(np.median(var)), np.log(4.0)]
    best = optimize.minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 4000})
    s0sq, d0 = np.exp(best.x)
    return {
        "s0": float(np.sqrt(s0sq)),
        "d0": float(d0),
        "conditions": int(len(frame)),
        "largest_sd": float(np.sqrt(frame["var"].max())),
        "largest": frame.loc[frame["var"].idxmax(), ["study", "condition"]].tolist(),
        "median_sd": float(np.sqrt(frame["var"].median())),
        "rms_sd": float(np.sqrt(frame["var"].mean())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    files = glob.glob(str(ROOT / "studies" / "results" / "*.csv"))
    stamp = datetime.now(timezone.utc)
    command = " ".join(["python", *sys.argv])
    fits = {metric: fit(seed_variances(files, f"{metric}_per_seed")) for metric in ("accuracy", "macro_f1")}
    per_method = (
        seed_variances(files, "accuracy_per_seed")
        .groupby("method")["var"]
        .agg(
            conditions="count", rms_sd=lambda v: float(np.sqrt(v.mean())), largest_sd=lambda v: float(np.sqrt(v.max()))
        )
    )
    lines = [
        f"# The seed-variance prior ({stamp:%Y-%m-%d})",
        "",
        f"`{command}` on {platform.machine()}, Python {platform.python_version()}, scipy {__import__('scipy').__version__}; "
        f"read from the {len(files)} committed results `studies/results/*.csv` (each condition's per-seed test "
        "scores). Smyth's (2004) model s^2 / s0^2 ~ F(S - 1, d0), fitted by maximum likelihood; sds in points.",
        "",
        "| metric | conditions | s0 (prior sd) | d0 (prior degrees of freedom) | median sd | rms sd | largest sd (where) |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric, f in fits.items():
        lines.append(
            f"| {metric} | {f['conditions']} | {100 * f['s0']:.2f} | {f['d0']:.2f} | {100 * f['median_sd']:.2f} | "
            f"{100 * f['rms_sd']:.2f} | {100 * f['largest_sd']:.2f} ({f['largest'][0]}: {f['largest'][1]}) |"
        )
    lines += [
        "",
        "Per method (accuracy; most methods appear in one or two studies, so the verdict uses one prior for all):",
        "",
        "| method | conditions | rms sd | largest sd |",
        "|---|---|---|---|",
    ]
    for method, r in per_method.iterrows():
        lines.append(f"| {method} | {int(r.conditions)} | {100 * r.rms_sd:.2f} | {100 * r.largest_sd:.2f} |")
    write_result(
        Path(args.out) / f"seed-prior-{stamp:%Y%m%d}",
        {
            "meta": {
                "command": command,
                "date": stamp.isoformat(timespec="seconds"),
                "machine": platform.machine(),
                "python": platform.python_version(),
            },
            "fits": fits,
            "per_method": per_method.reset_index().to_dict("records"),
        },
        lines,
    )


if __name__ == "__main__":
    main()
