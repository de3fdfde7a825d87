"""What each method gets wrong, as the background reports analysed it: where errors come from and go to, how far
off the wrong predictions are (p(predicted) - p(true) on misclassified examples), which words errors share (with
both texts of a pair, stop-words out, and only where the counts support it), how stable those words' ranks are
across methods, the most confidently wrong examples, and the examples methods disagree on.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact, spearmanr
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from statsmodels.stats.multitest import multipletests

from tuneoff.analysis.groups import Condition

WORD = re.compile(r"[a-z][a-z']{2,}")
MIN_COUNT = 5  # a word must occur in at least this many misclassified examples to be tested
FDR = 0.10  # Benjamini-Hochberg false discovery rate for "over-represented in errors"


def _text(p: pd.DataFrame) -> pd.Series:
    return p["text"].astype(str) + ((" " + p["text_pair"].astype(str)) if "text_pair" in p.columns else "")


def error_shares(c: Condition) -> dict:
    """Share of errors by true class (where they come from) and by predicted class (where they go), over every
    misclassification of every seed."""
    wrong = pd.concat(
        [r["predictions"][r["predictions"]["true_label"] != r["predictions"]["pred_label"]] for r in c.runs]
    )
    n = max(len(wrong), 1)
    return {
        "errors_per_seed": len(wrong) / len(c.runs),
        "from_share": {l: float((wrong["true_label"] == l).sum() / n) for l in c.label_names},
        "to_share": {l: float((wrong["pred_label"] == l).sum() / n) for l in c.label_names},
    }


def probability_gaps(c: Condition) -> np.ndarray:
    """p(predicted) - p(true) for every misclassified example of every seed: near 0 a near miss, near 1 a
    confident mistake (the background reports' box plots)."""
    gaps = []
    for r in c.runs:
        p = r["predictions"]
        wrong = p[p["true_label"] != p["pred_label"]]
        if len(wrong):
            pred = wrong.apply(lambda row: row[f"prob_{row['pred_label']}"], axis=1)
            true = wrong.apply(lambda row: row[f"prob_{row['true_label']}"], axis=1)
            gaps.append((pred - true).to_numpy(dtype=float))
    return np.concatenate(gaps) if gaps else np.array([])


def confident_errors(c: Condition, k: int = 5) -> pd.DataFrame:
    """The k most confidently wrong test examples (each example once, at its most confident seed)."""
    frames = []
    for r in c.runs:
        p = r["predictions"]
        wrong = p[p["true_label"] != p["pred_label"]].copy()
        wrong["probability"] = [row[f"prob_{row['pred_label']}"] for _, row in wrong.iterrows()]
        wrong["seed"] = r["seed"]
        frames.append(wrong)
    cols = ["id", "text", "true_label", "pred_label", "probability", "seed"]
    if not frames or not sum(len(f) for f in frames):
        return pd.DataFrame(columns=cols)
    wrong = pd.concat(frames).sort_values("probability", ascending=False).drop_duplicates("id").head(k)
    wrong["text"] = _text(wrong).str.slice(0, 300)
    return wrong[cols].reset_index(drop=True)


def word_statistics(c: Condition, min_count: int = MIN_COUNT) -> pd.DataFrame:
    """Words over-represented in the examples this condition mostly gets wrong, vs those it gets right.

    Document frequency in errors vs correct examples (each example once: wrong in at least half of the seeds),
    both texts of a pair, English stop-words out; a word is kept when it occurs in >= ``min_count`` errors and
    Fisher's exact test (one-sided) survives Benjamini-Hochberg at FDR 10% over the words tested."""
    p = c.runs[0]["predictions"]
    wrong = c.mostly_wrong().reindex(p["id"]).to_numpy()
    docs = [set(WORD.findall(t.lower())) - ENGLISH_STOP_WORDS for t in _text(p)]
    in_err = Counter(w for d, bad in zip(docs, wrong) if bad for w in d)
    in_ok = Counter(w for d, bad in zip(docs, wrong) if not bad for w in d)
    n_err, n_ok = int(wrong.sum()), int((~wrong).sum())
    rows = []
    for w, k in in_err.items():
        if k >= min_count:
            ok = in_ok[w]
            p_value = fisher_exact([[k, n_err - k], [ok, n_ok - ok]], alternative="greater").pvalue
            ratio = ((k + 1) / (n_err + 1)) / ((ok + 1) / (n_ok + 1))  # add-one smoothed ratio of document frequencies
            rows.append({"word": w, "in_errors": k, "in_correct": ok, "ratio": ratio, "p_value": float(p_value)})
    table = pd.DataFrame(rows, columns=["word", "in_errors", "in_correct", "ratio", "p_value"])
    if len(table):
        table["supported"] = multipletests(table["p_value"], alpha=FDR, method="fdr_bh")[0]
        table = table.sort_values(["ratio", "word"], ascending=[False, True]).reset_index(drop=True)
        table["rank"] = np.arange(1, len(table) + 1)
    else:
        table["supported"], table["rank"] = [], []
    return table


def word_rank_stability(tables: dict[str, pd.DataFrame], top_k: int = 15) -> dict:
    """How much methods agree on which words go with errors: for each pair of conditions, Spearman's rank
    correlation of the ranks of the words either puts in its top ``top_k`` (a word one method never tested ranks
    last there). Returns the mean and each pair's value."""
    pairs = {}
    for (a, ta), (b, tb) in combinations(tables.items(), 2):
        words = sorted(set(ta.head(top_k)["word"]) | set(tb.head(top_k)["word"]))
        if len(words) < 3:
            continue
        rank_a = [ta.set_index("word")["rank"].get(w, len(ta) + 1) for w in words]
        rank_b = [tb.set_index("word")["rank"].get(w, len(tb) + 1) for w in words]
        if len(set(rank_a)) < 2 or len(set(rank_b)) < 2:
            continue  # one side ranks none of these words (all tied last): the correlation is undefined, not zero
        pairs[(a, b)] = float(spearmanr(rank_a, rank_b).statistic)
    return {"mean": float(np.mean(list(pairs.values()))) if pairs else None, "pairs": pairs}


def disagreements(conditions: list[Condition], k: int = 10) -> pd.DataFrame:
    """Test examples the conditions disagree on (some mostly right, some mostly wrong), the most divided first."""
    if len(conditions) < 2:
        return pd.DataFrame()
    right = pd.DataFrame({c.name: ~c.mostly_wrong() for c in conditions})
    share = right.mean(axis=1)
    split = right[(share > 0) & (share < 1)]
    if split.empty:
        return pd.DataFrame()
    order = (split.mean(axis=1) - 0.5).abs().sort_values(kind="stable").index[:k]
    p = conditions[0].runs[0]["predictions"].set_index("id")
    return pd.DataFrame(
        {
            "id": order,
            "text": _text(p.loc[order]).str.slice(0, 200).values,
            "true_label": p.loc[order, "true_label"].values,
            "right": [", ".join(c for c in right.columns if right.loc[i, c]) for i in order],
            "wrong": [", ".join(c for c in right.columns if not right.loc[i, c]) for i in order],
        }
    )


def error_overlap(conditions: list[Condition]) -> pd.DataFrame:
    """Jaccard overlap of the sets of examples each condition mostly gets wrong."""
    sets = {c.name: set(c.mostly_wrong().pipe(lambda s: s[s].index)) for c in conditions}
    rows = []
    for (a, ea), (b, eb) in combinations(sets.items(), 2):
        inter, union = len(ea & eb), len(ea | eb)
        rows.append(
            {
                "a": a,
                "b": b,
                "errors_a": len(ea),
                "errors_b": len(eb),
                "shared": inter,
                "jaccard": inter / union if union else 1.0,
            }
        )
    return pd.DataFrame(rows, columns=["a", "b", "errors_a", "errors_b", "shared", "jaccard"])
