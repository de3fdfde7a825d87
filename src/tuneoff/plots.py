"""The study report's plots (matplotlib, rendered off-screen to base64 PNG for embedding in HTML)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG in memory
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tuneoff import analysis  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _colors(names: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def plot_curves(conditions, colors) -> str:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for c in conditions:
        for j, run in enumerate(c.runs):
            h = pd.DataFrame(run["history"])
            if h.empty:
                continue
            kw = {"color": colors[c.name], "alpha": 0.9 if j == 0 else 0.35, "label": c.name if j == 0 else None}
            ax1.plot(h["step"], h["train_loss"], marker=".", **kw)
            ax2.plot(h["step"], h["val_accuracy"], marker=".", **kw)
    ax1.set(title="training loss", xlabel="optimizer step", ylabel="loss")
    ax2.set(title="validation accuracy", xlabel="optimizer step", ylabel="accuracy")
    ax2.legend(fontsize=7, loc="lower right")
    return _png(fig)


def plot_quality(table: pd.DataFrame, colors) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(table) + 1.8))
    y = np.arange(len(table))
    c = [colors[n] for n in table["condition"]]
    err = [table["accuracy"] - table["accuracy_ci_low"], table["accuracy_ci_high"] - table["accuracy"]]
    axes[0].barh(y, table["accuracy"], xerr=np.clip(err, 0, None), color=c, capsize=3)
    axes[0].set(title="test accuracy (95% bootstrap CI)", yticks=y, yticklabels=table["condition"])
    axes[1].barh(y, table["macro_f1"], xerr=table["macro_f1_std"], color=c, capsize=3)
    axes[1].set(title="macro-F1 (± std over seeds)", yticks=y, yticklabels=[])
    lo = max(0.0, min(table["accuracy_ci_low"].min(), table["macro_f1"].min()) - 0.05)
    for ax in axes:
        ax.set_xlim(lo, 1.0)
        ax.invert_yaxis()
    return _png(fig)


def plot_costs(table: pd.DataFrame, colors) -> str:
    fig, axes = plt.subplots(1, len(analysis.COSTS), figsize=(14, 0.45 * len(table) + 1.8))
    y = np.arange(len(table))
    for ax, (key, title) in zip(axes, analysis.COSTS.items()):
        ax.barh(y, table[key].fillna(0), color=[colors[n] for n in table["condition"]])
        ax.set(title=title, yticks=y, yticklabels=table["condition"] if ax is axes[0] else [])
        if key == "trainable_params":
            ax.set_xscale("log")
        ax.invert_yaxis()
    return _png(fig)


def plot_pareto(table: pd.DataFrame, colors) -> str:
    keys = [k for k in ("train_seconds", "peak_memory_mb", "trainable_params") if table[k].notna().any()]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for r in table.itertuples():
            ax.scatter(getattr(r, key), r.accuracy, color=colors[r.condition], s=60, label=r.condition,
                       edgecolors="black" if getattr(r, f"pareto_{key}") else "none", linewidths=1.5)
        front = table[table[f"pareto_{key}"]].sort_values(key)
        ax.plot(front[key], front["accuracy"], "k--", lw=1, label="Pareto front")
        ax.set(xlabel=analysis.COSTS[key], ylabel="test accuracy", title=f"accuracy vs {analysis.COSTS[key]}")
        if key == "trainable_params":
            ax.set_xscale("log")
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def plot_sweeps(table: pd.DataFrame, conditions) -> str | None:
    params = [c for c in table.columns if c.startswith("param:") and pd.to_numeric(table[c], errors="coerce").notna().sum() > 1]
    if not params:
        return None
    fig, axes = plt.subplots(1, len(params), figsize=(5 * len(params), 3.8), squeeze=False)
    variants = {c.name: c.variant for c in conditions}
    for ax, p in zip(axes[0], params):
        sub = table[pd.to_numeric(table[p], errors="coerce").notna()].assign(variant=lambda d: d["condition"].map(variants))
        for variant, g in sub.groupby("variant"):
            g = g.assign(x=pd.to_numeric(g[p])).sort_values("x")
            ax.errorbar(g["x"], g["accuracy"], yerr=g["accuracy_std"], marker="o", capsize=3, label=variant)
        ax.set(xlabel=p[len("param:"):], ylabel="test accuracy", title=f"sweep over {p[len('param:'):]}")
        if sub[p].astype(float).min() > 0 and sub[p].astype(float).max() / sub[p].astype(float).min() >= 8:
            ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_confusions(conditions) -> str:
    n = len(conditions)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    labels = conditions[0].label_names
    size = 1.2 + 0.35 * len(labels)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size + 1, rows * size + 0.6), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, c in zip(axes.flat, conditions):
        cm = np.sum([r["metrics"]["test"]["confusion_matrix"] for r in c.runs], axis=0).astype(float)
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.set(title=c.name, xticks=range(len(labels)), yticks=range(len(labels)))
        ax.set_xticklabels(labels, rotation=60, fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
        if len(labels) <= 8:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if cm[i, j] > 0.5 else "black")
    fig.supxlabel("predicted")
    fig.supylabel("true (row-normalised)")
    return _png(fig)


def plot_reliability(conditions, colors) -> str:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    for c in conditions:
        preds = c.majority_predictions()
        probs = preds[[f"prob_{n}" for n in c.label_names]].values
        ece, bins = analysis.expected_calibration_error(probs.max(1), (preds["true_label"] == preds["pred_label"]).values)
        ax.plot(bins["confidence"], bins["accuracy"], marker="o", color=colors[c.name], label=f"{c.name} (ECE {ece:.3f})")
    ax.set(xlabel="confidence (max probability)", ylabel="accuracy", title="reliability diagram", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    return _png(fig)


def plot_errors(errors: dict[str, dict], overlap: pd.DataFrame, labels: list[str]) -> str:
    names = list(errors)
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(names) + 2.2))
    y = np.arange(len(names))
    for ax, key, title in ((axes[0], "from_share", "errors come from (true label)"), (axes[1], "to_share", "errors go to (predicted label)")):
        left = np.zeros(len(names))
        for i, label in enumerate(labels):
            vals = np.array([errors[n][key][label] for n in names])
            ax.barh(y, vals, left=left, label=label, color=plt.get_cmap("tab20")(i % 20))
            left += vals
        ax.set(title=title, yticks=y, yticklabels=names if ax is axes[0] else [], xlim=(0, 1))
        ax.invert_yaxis()
    axes[1].legend(fontsize=6, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    mat = np.eye(len(names))
    for r in overlap.itertuples():
        i, j = names.index(r.a), names.index(r.b)
        mat[i, j] = mat[j, i] = r.jaccard
    axes[2].imshow(mat, cmap="Oranges", vmin=0, vmax=1)
    axes[2].set(title="error overlap (Jaccard)", xticks=y, yticks=y)
    axes[2].set_xticklabels(names, rotation=60, fontsize=7)
    axes[2].set_yticklabels(names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            axes[2].text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7)
    return _png(fig)


def plot_search(frame: pd.DataFrame, metric: str, maximize: bool) -> str:
    """Each variant's trials in the order they were asked: the objective (pruned and infeasible trials marked) and
    the best feasible value so far."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    colors = _colors(sorted(frame.variant.unique()))
    for variant, group in frame.sort_values("trial").groupby("variant"):
        done = group[(group.status == "done") & group[metric].notna()]
        feasible = done[done.feasible.fillna(False).astype(bool)] if "feasible" in done else done
        ax.scatter(feasible.trial, feasible[metric], color=colors[variant], label=variant, zorder=3)
        if len(done) > len(feasible):
            infeasible = done.drop(feasible.index)
            ax.scatter(infeasible.trial, infeasible[metric], color=colors[variant], marker="x", label=f"{variant} (over a constraint)")
        best = (feasible[metric].cummax() if maximize else feasible[metric].cummin())
        ax.step(feasible.trial, best, where="post", color=colors[variant], alpha=0.6)
        pruned = group[group.status == "pruned"]
        if len(pruned):
            ax.scatter(pruned.trial, [ax.get_ylim()[0]] * len(pruned), color=colors[variant], marker="v", alpha=0.5,
                       label=f"{variant} (pruned)")
    ax.set(title=f"search: {metric} per trial (line: best so far)", xlabel="trial", ylabel=metric)
    ax.legend(fontsize=8)
    return _png(fig)
