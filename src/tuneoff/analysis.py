"""Analysis of a study, computed from the stored predictions of its finished runs.

A *condition* is a variant at one grid point; its runs differ only by seed. Statistics come from well-kept
libraries: McNemar's exact test from statsmodels, BCa bootstrap confidence intervals from scipy, metrics from
scikit-learn. Everything here returns plain data (frames, dicts); ``report`` draws and writes it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from tuneoff.errors import TuneoffError
from tuneoff.store import Store

ALPHA = 0.05


@dataclass
class Condition:
    name: str
    variant: str
    params: dict
    method: str
    runs: list[dict] = field(default_factory=list)  # one per seed: row, metrics, resources, predictions, history

    @property
    def label_names(self) -> list[str]:
        return [c[len("prob_"):] for c in self.runs[0]["predictions"].columns if c.startswith("prob_")]

    def correct(self) -> pd.DataFrame:
        """Per test example (rows, by id) and seed (columns): 1 if right."""
        cols = {r["seed"]: (r["predictions"]["true_label"] == r["predictions"]["pred_label"]).astype(float).values
                for r in self.runs}
        return pd.DataFrame(cols, index=self.runs[0]["predictions"]["id"].astype(str).values)

    def majority_predictions(self) -> pd.DataFrame:
        """The seeds' most common prediction per example (ties: the first seed's), with mean probabilities."""
        first = self.runs[0]["predictions"].copy()
        if len(self.runs) > 1:
            votes = zip(*(r["predictions"]["pred_label"].tolist() for r in self.runs))
            first["pred_label"] = [_majority(v) for v in votes]
            for col in [c for c in first.columns if c.startswith("prob_")]:
                first[col] = np.mean([r["predictions"][col].values for r in self.runs], axis=0)
        return first


def _majority(votes: tuple[str, ...]) -> str:
    label, count = Counter(votes).most_common(1)[0]
    return label if count > 1 else votes[0]


def condition_name(variant: str, params: dict) -> str:
    def show(v):  # a searched learning rate 0.0002288113668475521 reads as 0.0002288
        return f"{v:.4g}" if isinstance(v, float) else v

    return " ".join([variant] + [f"{k.rsplit('.', 1)[-1]}={show(v)}" for k, v in params.items()])


def load_conditions(store: Store, study: str) -> list[Condition]:
    rows = store.runs(study, "done")
    if not rows:
        raise TuneoffError(f"Study {study!r} has no finished runs yet: nothing to analyse. Run it first (tuneoff run).")
    conditions: dict[str, Condition] = {}
    for row in rows:
        params = json.loads(row["params"])
        name = condition_name(row["variant"], params)
        run_dir = Path(row["run_dir"])
        try:
            predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str, "true_label": str, "pred_label": str},
                                      keep_default_na=False)
            history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line]
        except OSError as exc:
            raise TuneoffError(f"Run {row['run_id']}: its directory {run_dir} is incomplete ({exc}).") from exc
        metrics, resources = json.loads(row["metrics"]), json.loads(row["resources"])
        config = yaml.safe_load(row["config_yaml"])
        method = config["method"]["name"]
        cond = conditions.setdefault(name, Condition(name, row["variant"], params, method))
        cond.runs.append({"run_id": row["run_id"], "seed": row["seed"], "metrics": metrics, "resources": resources,
                          "predictions": predictions, "history": history, "device": row["device"], "config": config})
    return list(conditions.values())


# --- statistics -----------------------------------------------------------------------------------------------


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """BCa bootstrap CI of the mean (scipy). A constant sample has no spread: its CI is the point itself."""
    values = np.asarray(values, dtype=float)
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, confidence_level=confidence, method="BCa", n_resamples=2000, random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_bootstrap_diff(a: np.ndarray, b: np.ndarray, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean(a) - mean(b) over the same examples, with a paired BCa bootstrap CI."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if np.ptp(a - b) == 0:
        return diff, diff, diff
    res = stats.bootstrap((a, b), lambda x, y: np.mean(x) - np.mean(y), paired=True, confidence_level=confidence,
                          method="BCa", n_resamples=2000, random_state=seed)
    return diff, float(res.confidence_interval.low), float(res.confidence_interval.high)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test on the 2x2 table of (a right?, b right?) over the same examples."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    p = 1.0 if table[0][1] + table[1][0] == 0 else float(mcnemar(table, exact=True).pvalue)
    return {"table": table, "a_only": table[0][1], "b_only": table[1][0], "p_value": p}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> tuple[float, pd.DataFrame]:
    """ECE (Guo et al., 2017, "On Calibration of Modern Neural Networks"): sum_b |B|/n |acc(B) - conf(B)| over
    equal-width confidence bins; returns it with the per-bin table for a reliability diagram."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "count": int(mask.sum()),
                         "confidence": float(confidence[mask].mean()), "accuracy": float(correct[mask].mean())})
    table = pd.DataFrame(rows)
    ece = float((table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / len(confidence)) if rows else 0.0
    return ece, table


def pareto_front(points: list[tuple[str, float, float]]) -> set[str]:
    """Names not dominated on (quality: higher is better, cost: lower is better)."""
    front = set()
    for name, q, c in points:
        dominated = any(q2 >= q and c2 <= c and (q2 > q or c2 < c) for n2, q2, c2 in points if n2 != name)
        if not dominated:
            front.add(name)
    return front


# --- per-condition tables -----------------------------------------------------------------------------------------

COSTS = {"trainable_params": "trainable parameters", "checkpoint_mb": "checkpoint (MB)",
         "peak_memory_mb": "peak memory (MB)", "train_seconds": "train time (s)"}


def _peak_memory(resources: dict) -> float | None:
    return resources.get("cuda_max_allocated_mb") or resources.get("peak_rss_mb")


def summary(conditions: list[Condition]) -> pd.DataFrame:
    rows = []
    for c in conditions:
        acc = np.array([r["metrics"]["test"]["accuracy"] for r in c.runs])
        f1 = np.array([r["metrics"]["test"]["macro_f1"] for r in c.runs])
        lo, hi = bootstrap_ci(c.correct().mean(axis=1).values)
        res = [r["resources"] for r in c.runs]
        preds = c.majority_predictions()
        probs = preds[[f"prob_{n}" for n in c.label_names]].values
        ece, _ = expected_calibration_error(probs.max(1), (preds["true_label"] == preds["pred_label"]).values)
        rows.append({
            "condition": c.name, "method": c.method, "seeds": len(c.runs),
            "accuracy": acc.mean(), "accuracy_std": acc.std(ddof=1) if len(acc) > 1 else 0.0,
            "accuracy_ci_low": lo, "accuracy_ci_high": hi,
            "macro_f1": f1.mean(), "macro_f1_std": f1.std(ddof=1) if len(f1) > 1 else 0.0, "ece": ece,
            "trainable_params": res[0]["trainable_params"], "trainable_pct": res[0]["trainable_pct"],
            "checkpoint_mb": np.mean([r["checkpoint_bytes"] for r in res]) / 1e6,
            "peak_memory_mb": np.mean([_peak_memory(r) or np.nan for r in res]),
            "train_seconds": np.mean([r["train_seconds"] for r in res]),
            "train_samples_per_s": np.mean([r["train_samples_per_s"] for r in res]),
            "test_samples_per_s": np.mean([r.get("test_samples_per_s", np.nan) for r in res]),
            **{f"param:{k}": v for k, v in c.params.items()},
        })
    table = pd.DataFrame(rows)
    for cost in COSTS:
        front = pareto_front([(r.condition, r.accuracy, getattr(r, cost)) for r in table.itertuples() if pd.notna(getattr(r, cost))])
        table[f"pareto_{cost}"] = table["condition"].isin(front)
    return table.sort_values("accuracy", ascending=False).reset_index(drop=True)


def per_class(conditions: list[Condition]) -> pd.DataFrame:
    rows = []
    for c in conditions:
        for name in c.label_names:
            vals = [r["metrics"]["test"]["per_class"][name] for r in c.runs]
            rows.append({"condition": c.name, "class": name, "precision": np.mean([v["precision"] for v in vals]),
                         "recall": np.mean([v["recall"] for v in vals]), "f1": np.mean([v["f1-score"] for v in vals]),
                         "support": vals[0]["support"]})
    return pd.DataFrame(rows)


def comparisons(conditions: list[Condition]) -> pd.DataFrame:
    """Every pair on the same test set: paired bootstrap difference in accuracy and McNemar per shared seed."""
    rows = []
    for a, b in combinations(conditions, 2):
        ca, cb = a.correct(), b.correct()
        shared_ids = ca.index.intersection(cb.index)
        if len(shared_ids) == 0:
            continue
        diff, lo, hi = paired_bootstrap_diff(ca.loc[shared_ids].mean(1).values, cb.loc[shared_ids].mean(1).values)
        seeds = sorted(set(ca.columns) & set(cb.columns))
        tests = [mcnemar_exact(ca.loc[shared_ids, s].values, cb.loc[shared_ids, s].values) for s in seeds]
        significant = lo > 0 or hi < 0
        rows.append({"a": a.name, "b": b.name, "n": len(shared_ids), "accuracy_diff": diff, "ci_low": lo, "ci_high": hi,
                     "significant": significant, "mcnemar_p": [t["p_value"] for t in tests],
                     "mcnemar_significant_seeds": sum(t["p_value"] < ALPHA for t in tests), "paired_seeds": len(seeds)})
    return pd.DataFrame(rows)


WORD = re.compile(r"[a-z][a-z']{2,}")


def error_analysis(c: Condition, top_k: int = 15, min_count: int = 3) -> dict:
    """Where errors come from and go to, words over-represented in errors, and probability gaps per class."""
    preds = c.majority_predictions()
    wrong = preds["true_label"] != preds["pred_label"]
    errors = preds[wrong]
    n_err = max(len(errors), 1)
    labels = c.label_names
    from_share = {l: float((errors["true_label"] == l).sum() / n_err) for l in labels}
    to_share = {l: float((errors["pred_label"] == l).sum() / n_err) for l in labels}
    docs = [set(WORD.findall(str(t).lower())) for t in preds["text"]]
    in_err = Counter(w for d, bad in zip(docs, wrong) if bad for w in d)
    in_ok = Counter(w for d, bad in zip(docs, wrong) if not bad for w in d)
    n_ok = max(int((~wrong).sum()), 1)
    # Ratio of document frequencies in misclassified vs correct examples, add-one smoothed.
    scored = [(w, k, in_ok[w], ((k + 1) / (n_err + 1)) / ((in_ok[w] + 1) / (n_ok + 1))) for w, k in in_err.items() if k >= min_count]
    words = [{"word": w, "in_errors": k, "in_correct": ok, "ratio": r} for w, k, ok, r in sorted(scored, key=lambda x: -x[3])[:top_k]]
    gaps = {l: float(preds[f"prob_{l}"].mean() - (preds["true_label"] == l).mean()) for l in labels}
    return {"errors": int(wrong.sum()), "n": len(preds), "from_share": from_share, "to_share": to_share,
            "overrepresented_words": words, "probability_gap": gaps, "error_ids": set(errors["id"].astype(str))}


def error_overlap(analyses: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for (a, ea), (b, eb) in combinations(analyses.items(), 2):
        inter, union = len(ea["error_ids"] & eb["error_ids"]), len(ea["error_ids"] | eb["error_ids"])
        rows.append({"a": a, "b": b, "errors_a": len(ea["error_ids"]), "errors_b": len(eb["error_ids"]),
                     "shared": inter, "jaccard": inter / union if union else 1.0})
    return pd.DataFrame(rows)
