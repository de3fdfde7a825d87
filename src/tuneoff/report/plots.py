"""The study report's plots (matplotlib, rendered off-screen to base64 PNG for embedding in HTML)."""

from __future__ import annotations

import base64
import io

import matplotlib
import matplotlib.text
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter
from PIL import Image

from tuneoff.analysis.groups import run_ece
from tuneoff.analysis.sentences import LABELS
from tuneoff.analysis.significance import expected_calibration_error
from tuneoff.core.outputs import plot_text

matplotlib.use("Agg")  # no display: render to PNG in memory
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tuneoff.analysis.verdict import COSTS  # noqa: E402


def _png(fig) -> str:
    # every text of the figure (titles, labels, legends, tick labels set from names) without control characters: a
    # label name holding them made matplotlib warn of missing glyphs, with source paths (core.outputs)
    for text in fig.findobj(matplotlib.text.Text):
        text.set_text(plot_text(text.get_text()))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    # A plot has few colours besides anti-aliasing: a 256-colour palette looks the same and takes about a third of
    # the bytes (a 192-run study's self-contained report.html: 7.4 MB in full colour).
    buf.seek(0)
    small = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(256).save(small, format="png", optimize=True)
    return base64.b64encode(small.getvalue()).decode()


def _few_ticks(ax, log: bool = False) -> None:
    """At most five labelled ticks on the x axis, none on the minor ones of a log axis: labels never overlap."""

    if log:
        ax.xaxis.set_major_locator(LogLocator(numticks=5))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(5))


def short_names(names: list[str]) -> dict[str, str]:
    """Each condition name without the words every name shares (``lora_r8 max_train_samples=300 data=bbc_news`` ->
    ``lora_r8`` when all share the rest), the first word (the variant) always kept; the full names where that would
    make two alike."""
    words = [plot_text(n).split(" ") for n in names]
    shared = set.intersection(*(set(w[1:]) for w in words)) if words else set()
    short = {n: " ".join([w[0]] + [x for x in w[1:] if x not in shared]) for n, w in zip(names, words)}
    return short if len(set(short.values())) == len(names) else {n: plot_text(n) for n in names}


def _legend_outside(ax, *args, **kw) -> None:
    """The legend to the right of ``ax``, outside it (the PNG is cropped to fit): inside, a study's long condition
    names covered the curves and points it names."""
    ax.legend(*args, fontsize=7, bbox_to_anchor=(1.02, 1.0), loc="upper left", **kw)


def _colors(names: list[str]) -> dict[str, tuple]:
    # tab10 while it has a colour for each; tab20 beyond (the method zoo has 14 conditions), so no two share one
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def plot_curves(conditions, colors) -> str:
    """Training loss, validation loss and validation accuracy per evaluation (each seed a line)."""
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    for c in conditions:
        for j, run in enumerate(c.runs):
            h = pd.DataFrame(run["history"])
            if h.empty:
                continue
            kw = {"color": colors[c.name], "alpha": 0.9 if j == 0 else 0.35, "label": c.name if j == 0 else None}
            ax1.plot(h["step"], h["train_loss"], marker=".", **kw)
            if "val_loss" in h:
                ax2.plot(h["step"], h["val_loss"], marker=".", **kw)
            ax3.plot(h["step"], h["val_accuracy"], marker=".", **kw)
    ax1.set(title="training loss", xlabel="optimizer step", ylabel="loss")
    ax2.set(title="validation loss", xlabel="optimizer step", ylabel="loss")
    ax3.set(title="validation accuracy", xlabel="optimizer step", ylabel="accuracy")
    _legend_outside(ax3)
    return _png(fig)


def plot_quality(table: pd.DataFrame, colors, baseline: float | None = None) -> str:
    """Test accuracy and macro-F1, each with its two-level 95% CI (the majority-class baseline's accuracy dashed)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(table) + 1.8))
    y = np.arange(len(table))
    c = [colors[n] for n in table["condition"]]
    err = [table["accuracy"] - table["accuracy_ci_low"], table["accuracy_ci_high"] - table["accuracy"]]
    axes[0].barh(y, table["accuracy"], xerr=np.clip(err, 0, None), color=c, capsize=3)
    axes[0].set(title="test accuracy (95% CI over seeds and test examples)", yticks=y, yticklabels=table["condition"])
    err = [table["macro_f1"] - table["macro_f1_ci_low"], table["macro_f1_ci_high"] - table["macro_f1"]]
    axes[1].barh(y, table["macro_f1"], xerr=np.clip(err, 0, None), color=c, capsize=3)
    axes[1].set(title="test macro-F1 (95% CI over seeds and test examples)", yticks=y, yticklabels=[])
    lo = max(0.0, min(table["accuracy_ci_low"].min(), table["macro_f1_ci_low"].min(), baseline or 1.0) - 0.05)
    for ax in axes:
        ax.set_xlim(lo, 1.0)
        ax.invert_yaxis()
    if baseline is not None:
        axes[0].axvline(baseline, color="k", ls="--", lw=1, label="majority-class baseline")
        axes[0].legend(fontsize=7, loc="lower right")
    return _png(fig)


def plot_costs(table: pd.DataFrame, colors) -> str:
    fig, axes = plt.subplots(1, len(COSTS), figsize=(14, 0.45 * len(table) + 1.8))
    y = np.arange(len(table))
    for ax, (key, title) in zip(axes, COSTS.items()):
        ax.barh(y, table[key].fillna(0), color=[colors[n] for n in table["condition"]])
        ax.set(title=title, yticks=y, yticklabels=table["condition"] if ax is axes[0] else [])
        if key in ("trainable_params", "trained_mb"):
            ax.set_xscale("log")
        _few_ticks(ax, key in ("trainable_params", "trained_mb"))
        ax.invert_yaxis()
    return _png(fig)


def plot_pareto(table: pd.DataFrame, colors, metric: str = "accuracy") -> str:
    """The verdict's metric against each cost, each cost's Pareto front (the verdict's ``pareto_<cost>``) dashed."""
    label = LABELS[metric]
    keys = [k for k in ("train_seconds", "peak_memory_mb", "trained_mb") if table[k].notna().any()]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 4), squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], keys):
        for r in table.itertuples():
            ax.scatter(
                getattr(r, key),
                getattr(r, metric),
                color=colors[r.condition],
                s=60,
                label=r.condition,
                edgecolors="black" if getattr(r, f"pareto_{key}") else "none",
                linewidths=1.5,
            )
        front = table[table[f"pareto_{key}"]].sort_values(key)
        ax.plot(front[key], front[metric], "k--", lw=1, label="Pareto front")
        ax.set(xlabel=COSTS[key], ylabel=f"test {label}", title=f"{label} vs {COSTS[key]}")
        if key == "trained_mb":
            ax.set_xscale("log")
        _few_ticks(ax, key == "trained_mb")
    _legend_outside(axes[0][-1])
    return _png(fig)


def plot_sweeps(table: pd.DataFrame, conditions) -> str | None:
    params = [
        c for c in table.columns if c.startswith("param:") and pd.to_numeric(table[c], errors="coerce").nunique() > 1
    ]
    if not params:
        return None
    fig, axes = plt.subplots(1, len(params), figsize=(5 * len(params), 3.8), squeeze=False)
    variants = {c.name: c.variant for c in conditions}
    for ax, p in zip(axes[0], params):
        sub = table[pd.to_numeric(table[p], errors="coerce").notna()].assign(
            variant=lambda d: d["condition"].map(variants)
        )
        if p == "param:data.max_train_samples" and sub["train_examples"].notna().all():
            sub = sub.assign(
                **{p: sub["train_examples"]}
            )  # a cap above the split's size means "all": plot what trained
        for variant, g in sub.groupby("variant"):
            g = g.assign(x=pd.to_numeric(g[p])).sort_values("x")
            ax.errorbar(g["x"], g["accuracy"], yerr=g["accuracy_std"].fillna(0), marker="o", capsize=3, label=variant)
        ax.set(xlabel=p[len("param:") :], ylabel="test accuracy", title=f"sweep over {p[len('param:') :]}")
        if sub[p].astype(float).min() > 0 and sub[p].astype(float).max() / sub[p].astype(float).min() >= 8:
            ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_data_size(table: pd.DataFrame) -> str:
    """Test accuracy (or the verdict's metric) against training examples, one panel per test set, a line per condition with its 95% interval;
    the majority class dotted, each size's recommended condition ringed."""
    sets = list(dict.fromkeys(zip(table.dataset, table.model)))
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.2), squeeze=False)
    lines = [n for n in dict.fromkeys(table.line) if n != "majority class"]
    colors = _colors(lines)
    for ax, (dataset, model) in zip(axes[0], sets):
        sub = table[(table.dataset == dataset) & (table.model == model)].sort_values("train_examples")
        for name, g in sub.groupby("line", sort=False):
            if name == "majority class":
                ax.plot(g.train_examples, g.score, "k:", lw=1, label=name)
                continue
            ax.errorbar(
                g.train_examples,
                g.score,
                yerr=[g.score - g.ci_low, g.ci_high - g.score],
                marker="o",
                capsize=3,
                color=colors[name],
                label=name,
            )
            picked = g[g.recommended.astype(bool)]
            ax.scatter(picked.train_examples, picked.score, s=160, facecolors="none", edgecolors="black", zorder=3)
        ax.set_xscale("log")
        sizes = sorted(sub.train_examples.unique())
        ax.set_xticks(sizes, [f"{int(n):,}" for n in sizes])  # the sizes trained, not powers of ten
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="training examples", ylabel=f"test {LABELS[sub.metric.iloc[0]]}", title=f"{dataset} · {model}")
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def plot_confusions(conditions) -> str:
    """Row-normalised confusion matrices summed over seeds; numbers in the cells only while they fit."""
    n = len(conditions)
    labels = conditions[0].label_names
    cols = min(n, 4 if len(labels) <= 6 else 2 if len(labels) <= 12 else 1)
    rows = (n + cols - 1) // cols
    size = 2.0 + 0.32 * len(labels)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size + 1, rows * (size + 0.4) + 0.6), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    tick = 7 if len(labels) <= 12 else 5
    for ax, c in zip(axes.flat, conditions):
        cm = np.sum([r["metrics"]["test"]["confusion_matrix"] for r in c.runs], axis=0).astype(float)
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(c.name, fontsize=8)
        ax.set_xticks(range(len(labels)), [_short(l) for l in labels], rotation=90, fontsize=tick)
        ax.set_yticks(range(len(labels)), [_short(l) for l in labels], fontsize=tick)
        if len(labels) <= 8:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(
                        j,
                        i,
                        f"{cm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if cm[i, j] > 0.5 else "black",
                    )
    fig.supxlabel("predicted")
    fig.supylabel("true (row-normalised)")
    fig.tight_layout()
    return _png(fig)


def _short(label: str, width: int = 14) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def plot_reliability(conditions, colors) -> str:
    """Reliability diagram per condition, pooling the (confidence, correct) pairs of its runs: each run is a model a
    user could deploy, so the pooled curve is their average calibration, not that of a vote over seeds."""

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    for c in conditions:
        conf, right = [], []
        for r in c.runs:
            p = r["predictions"]
            conf.append(p[[f"prob_{n}" for n in c.label_names]].to_numpy().max(1))
            right.append((p["true_label"] == p["pred_label"]).to_numpy())
        _, bins = expected_calibration_error(np.concatenate(conf), np.concatenate(right))
        eces = [run_ece(r, c.label_names)[0] for r in c.runs]
        spread = f" ± {np.std(eces, ddof=1):.3f}" if len(eces) > 1 else ""
        ax.plot(
            bins["confidence"],
            bins["accuracy"],
            marker="o",
            color=colors[c.name],
            label=f"{c.name} (ECE {np.mean(eces):.3f}{spread})",
        )
    ax.set(
        xlabel="confidence (max probability)",
        ylabel="accuracy",
        title="reliability (runs pooled)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    _legend_outside(ax)
    return _png(fig)


def plot_errors(shares: dict[str, dict], overlap: pd.DataFrame, labels: list[str]) -> str:
    names = list(shares)
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(names) + 2.4), layout="constrained")
    y = np.arange(len(names))
    for ax, key, title in (
        (axes[0], "from_share", "errors come from (true label)"),
        (axes[1], "to_share", "errors go to (predicted label)"),
    ):
        left = np.zeros(len(names))
        for i, label in enumerate(labels):
            vals = np.array([shares[n][key][label] for n in names])
            ax.barh(y, vals, left=left, label=_short(label), color=plt.get_cmap("tab20")(i % 20))
            left += vals
        ax.set(title=title, yticks=y, yticklabels=names if ax is axes[0] else [], xlim=(0, 1))
        ax.invert_yaxis()
    axes[1].legend(fontsize=6, bbox_to_anchor=(1.0, 1.0), loc="upper left", ncol=1 + len(labels) // 12)
    mat = np.eye(len(names))
    for r in overlap.itertuples():
        i, j = names.index(r.a), names.index(r.b)
        mat[i, j] = mat[j, i] = r.jaccard
    axes[2].imshow(mat, cmap="Oranges", vmin=0, vmax=1)
    axes[2].set_title("error overlap (Jaccard)")
    axes[2].set_xticks(y, names, rotation=90, fontsize=7)
    axes[2].set_yticks(y, names, fontsize=7)
    if len(names) <= 8:
        for i in range(len(names)):
            for j in range(len(names)):
                axes[2].text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7)
    return _png(fig)


def plot_gaps(gaps: dict[str, np.ndarray], colors) -> str:
    """p(predicted) - p(true) over misclassified examples, a box per condition (the background reports' plot)."""
    names = [n for n in gaps if len(gaps[n])]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(names), 1) + 1.6))
    if names:
        box = ax.boxplot([gaps[n] for n in names], vert=False, patch_artist=True, flierprops={"markersize": 2})
        for patch, n in zip(box["boxes"], names):
            patch.set_facecolor(colors[n])
        ax.set_yticks(range(1, len(names) + 1), names, fontsize=7)
        ax.invert_yaxis()
    ax.set(
        xlim=(0, 1), xlabel="p(predicted) − p(true)", title="how wrong the mistakes are (0: near miss, 1: confident)"
    )
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
            ax.scatter(
                infeasible.trial,
                infeasible[metric],
                color=colors[variant],
                marker="x",
                label=f"{variant} (over a constraint)",
            )
        best = feasible[metric].cummax() if maximize else feasible[metric].cummin()
        ax.step(feasible.trial, best, where="post", color=colors[variant], alpha=0.6)
        pruned = group[group.status == "pruned"]
        if len(pruned):
            ax.scatter(
                pruned.trial,
                [ax.get_ylim()[0]] * len(pruned),
                color=colors[variant],
                marker="v",
                alpha=0.5,
                label=f"{variant} (pruned)",
            )
    ax.set(title=f"search: {metric} per trial (line: best so far)", xlabel="trial", ylabel=metric)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_lengths(report: dict) -> tuple[str, str]:
    """Histogram and box plot of token lengths per split, each as base64 PNG."""
    lengths = report["_lengths"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for split, values in lengths.items():
        ax.hist(values, bins=50, alpha=0.5, label=split)
    ax.axvline(
        report["recommended_max_length"],
        color="k",
        ls="--",
        label=f"recommended max_length {report['recommended_max_length']}",
    )
    ax.set(title=f"{report['dataset']}: tokens per example", xlabel="tokens", ylabel="examples")
    ax.legend(fontsize=7)
    histogram = _png(fig)
    fig, ax = plt.subplots(figsize=(8, 2.2))
    ax.boxplot(list(lengths.values()), vert=False, showfliers=True, flierprops={"markersize": 2})
    ax.set_yticks(range(1, len(lengths) + 1), list(lengths))
    ax.set(title=f"{report['dataset']}: token length per split", xlabel="tokens")
    return histogram, _png(fig)


def plot_tuning(trials: pd.DataFrame, emp: pd.DataFrame, title: str = "") -> str:
    """One grid cell's tuning (the report draws one per cell, so a plot holds only the methods a reader compares).
    Left: expected best validation accuracy after k trials per condition (Dodge et al., 2019): a curve that keeps
    rising needs many trials to show its best. Right: each trial's validation accuracy against its learning rate
    (pruned trials as crosses at what they reached, the chosen rate starred). The legend names each condition by
    its variant."""
    names = list(dict.fromkeys(trials.condition))
    variants = dict(zip(trials.condition, trials.variant))
    colors = _colors(names)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4), layout="constrained")
    for name in names:
        e = emp[emp.condition == name]
        ax1.plot(e.trials, e.expected_best_val_accuracy, marker="o", color=colors[name], label=variants[name])
        t = trials[trials.condition == name]
        done, pruned, chosen = t[t.status == "done"], t[t.status == "pruned"], t[t.chosen.astype(bool)]
        ax2.scatter(done.lr, done.val_accuracy, color=colors[name], zorder=3)
        ax2.scatter(pruned.lr, pruned.val_accuracy, color=colors[name], marker="x", zorder=3)
        ax2.scatter(chosen.lr, chosen.val_accuracy, color=colors[name], marker="*", s=220, edgecolors="black", zorder=4)
    ax1.set(title="expected best validation accuracy after k trials", xlabel="trials (k)", ylabel="validation accuracy")
    ax1.xaxis.get_major_locator().set_params(integer=True)
    ax2.set_xscale("log")
    _few_ticks(ax2, log=True)
    ax2.set(
        title="validation accuracy by learning rate (x: pruned, *: chosen)",
        xlabel="learning rate",
        ylabel="validation accuracy",
    )
    if title:
        fig.suptitle(title, fontsize=10)
    _legend_outside(ax2, *ax1.get_legend_handles_labels())
    return _png(fig)
