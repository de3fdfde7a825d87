"""A study's finished runs, as the report compares them: conditions, grouped by what they can be compared on.

A *condition* is a variant at one grid point; its runs differ only by seed. A *group* holds the conditions that
were tested on the same examples: the same model, the same dataset and label set, and the same test split
(fingerprinted from the stored predictions: ids, texts and true labels). Pairs are formed only inside a group,
so two local ``test.csv`` files that happen to share row ids are never paired, and a study over two datasets
gets one verdict per dataset. Conditions trained on different numbers of training examples are different groups
too: how much labelled data a user has is their situation, not a choice among methods, so a study over training-set
sizes (``data.max_train_samples``) gets one verdict per size ("with 300 examples, use ..."), never "use full with
3,000 examples" (the sizes are counted before augmentation, which adds copies of the same examples). Everything is
read from the results store and the run directories' text files (predictions, history): no model and no dataset is
loaded, so a report can be rebuilt anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tuneoff.analysis.significance import (
    SeedPrior,
    class_f1_values,
    compare,
    expected_calibration_error,
    macro_f1_values,
)
from tuneoff.config import validation_score
from tuneoff.core.errors import TuneoffError
from tuneoff.core.outputs import from_spreadsheet
from tuneoff.results.store import Store, loads

log = logging.getLogger(__name__)


@dataclass
class Condition:
    name: str
    variant: str
    params: dict
    method: str
    runs: list[dict] = field(default_factory=list)  # one per seed: seed, metrics, resources, predictions, history, ...
    # The held-apart run the verdict picks on: the tuning phase's chosen trial (run_id, seed, history, config), or
    # None (a pinned rate, a study without tune:); its seed is never a final run's.
    trial: dict | None = None

    @property
    def label_names(self) -> list[str]:
        return [c[len("prob_") :] for c in self.runs[0]["predictions"].columns if c.startswith("prob_")]

    def correct(self, ids: list[str] | None = None) -> np.ndarray:
        """(n, seeds) 0/1 matrix: test example right in each run, rows in the order of ``ids``."""
        return self.scores(ids, "accuracy")

    def scores(self, ids: list[str] | None = None, metric: str = "accuracy") -> np.ndarray:
        """(n, seeds) per-example values whose column means are each run's test ``metric``: 0/1 correctness for
        accuracy, the linearised macro-F1 (``significance.macro_f1_values``) for macro_f1; rows in ``ids``' order."""
        ids = list(self.runs[0]["predictions"]["id"]) if ids is None else ids
        return np.stack(
            [example_scores(r["predictions"].set_index("id").loc[ids], self.label_names, metric) for r in self.runs],
            axis=1,
        )

    def seed_values(self, split: str, metric: str) -> np.ndarray:
        return np.array([r["metrics"][split][metric] for r in self.runs], dtype=float)

    def mostly_wrong(self) -> pd.Series:
        """Per example id: wrong in at least half of the seeds (an error set, for words and overlaps; never a
        predictor whose calibration is reported)."""
        wrong = 1 - self.correct()
        return pd.Series(wrong.mean(axis=1) >= 0.5, index=self.runs[0]["predictions"]["id"].values)

    def collapsed_runs(self) -> int:
        """Runs that predicted one class for every test example."""
        return sum(r["predictions"]["pred_label"].nunique() <= 1 for r in self.runs)


@dataclass
class Group:
    """Conditions scored on the same test examples: the unit a verdict is given for."""

    dataset: str
    model: str
    label_names: list[str]
    ids: list[str]  # the test examples, in a fixed order
    truth: pd.Series  # id -> true label
    majority: str  # the training split's most common class (the baseline predicts it)
    majority_source: str  # "training split" or "test split" (older runs without label counts)
    conditions: list[Condition] = field(default_factory=list)
    train_examples: int | None = None  # the training examples its conditions had (before augmentation)
    by_size: bool = False  # one of several groups that differ only in train_examples

    @property
    def title(self) -> str:
        size = f" · {self.train_examples:,} training examples" if self.by_size and self.train_examples else ""
        return f"{self.dataset} · {self.model}{size} · {len(self.ids):,} test examples"

    def baseline_correct(self) -> np.ndarray:
        return self.baseline_scores("accuracy")

    def baseline_scores(self, metric: str = "accuracy") -> np.ndarray:
        """The majority-class baseline's per-example values (one column: it has no seeds)."""
        truth = self.truth.loc[self.ids]
        frame = pd.DataFrame({"true_label": truth.to_numpy(), "pred_label": self.majority})
        return example_scores(frame, self.label_names, metric)[:, None]


def label_ids(predictions: pd.DataFrame, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The true and predicted labels of a predictions frame as class indices in ``labels``' order."""
    index = {name: i for i, name in enumerate(labels)}
    return predictions["true_label"].map(index).to_numpy(), predictions["pred_label"].map(index).to_numpy()


def example_scores(predictions: pd.DataFrame, labels: list[str], metric: str) -> np.ndarray:
    """One run's per-example values of ``metric`` (see ``Condition.scores``) from its true and predicted labels."""
    if metric == "accuracy":
        return (predictions["true_label"] == predictions["pred_label"]).to_numpy(dtype=np.float32)
    return macro_f1_values(*label_ids(predictions, labels), len(labels))


def condition_name(variant: str, params: dict) -> str:
    """``lora r=8 lr=0.001``; a dataset or model grid reads ``data=toy`` / ``model=minilm`` (no paths)."""

    def show(k, v):  # a searched learning rate 0.0002288113668475521 reads as 0.0002288
        if k.endswith(".name"):
            return f"{k.rsplit('.', 2)[-2]}={_short_name(str(v))}"
        return f"{k.rsplit('.', 1)[-1]}={f'{v:.4g}' if isinstance(v, float) else v}"

    return " ".join([variant] + [show(k, v) for k, v in params.items()])


def _short_name(name: str) -> str:
    """A local path reads as its file or folder name; a built-in or hub id as it is."""
    return Path(name).stem if name.startswith(("/", ".", "~")) or name.count("/") > 1 else name


def _read_run(row, run_dir: Path) -> tuple[pd.DataFrame, list[dict], dict]:
    try:
        predictions = from_spreadsheet(
            pd.read_csv(
                run_dir / "predictions.csv",
                dtype={"id": str, "true_label": str, "pred_label": str, "text": str, "text_pair": str},
                keep_default_na=False,
            )
        )
        history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError) as exc:
        raise TuneoffError(
            f"Run {row['run_id']}: its directory {run_dir} is incomplete ({exc}). Re-run it with "
            "`tuneoff run <study> --resume` after removing its row, or delete the study."
        ) from exc
    info = loads(row, "run_info", {}) or {}
    if not info and (run_dir / "run.json").is_file():
        info = json.loads((run_dir / "run.json").read_text())
    return predictions, history, info


def load_conditions(store: Store, study: str) -> list[Condition]:
    rows = store.runs(
        study, "done", phase="final"
    )  # a study's tuning trials choose a learning rate; they are not compared
    if not rows:
        every = store.runs(study)
        failed = [r for r in every if r["status"] == "failed"]
        if failed:
            last = (failed[-1]["error"] or "").strip().splitlines()[-1:] or ["no error recorded"]
            raise TuneoffError(
                f"Study {study!r}: no comparison run finished; {len(failed)} of its {len(every)} runs "
                f"failed (the last: {failed[-1]['run_id']}: {last[0][:300]}). Fix what they report "
                f"(tuneoff runs list --study {study}; each run's train.log), then tuneoff run <study "
                "file> --resume."
            )
        raise TuneoffError(f"Study {study!r} has no finished runs yet: nothing to analyse. Run it first (tuneoff run).")
    conditions: dict[str, Condition] = {}
    for row in rows:
        params, metrics, resources = (loads(row, key) for key in ("params", "metrics", "resources"))
        try:
            config = yaml.safe_load(row["config_yaml"])
        except yaml.YAMLError:
            config = None
        if params is None or not metrics or not resources or not isinstance(config, dict):
            log.warning(
                "run %s/%s: its stored record is damaged; it is left out of the analysis (`tuneoff runs "
                "rebuild` re-reads it from its run directory)",
                study,
                row["run_id"],
            )
            continue
        name = condition_name(row["variant"], params)
        predictions, history, info = _read_run(row, Path(row["run_dir"]))
        cond = conditions.setdefault(name, Condition(name, row["variant"], params, config["method"]["name"]))
        cond.runs.append(
            {
                "run_id": row["run_id"],
                "seed": row["seed"],
                "run_dir": row["run_dir"],
                "metrics": metrics,
                "resources": resources,
                "predictions": predictions,
                "history": history,
                "device": row["device"],
                "config": config,
                "info": info,
            }
        )
    if not conditions:
        raise TuneoffError(
            f"Study {study!r}: every stored record is damaged. Rebuild the store from the run directories: "
            f"tuneoff runs rebuild --results {store.root}."
        )
    _attach_trials(list(conditions.values()), store.runs(study, "done", phase="tune"))
    return list(conditions.values())


def _attach_trials(conditions: list[Condition], trial_rows) -> None:
    """Give each condition its tuning phase's chosen trial (the best on validation among the trials of its runs'
    common id prefix, as the protocol chose the rate its seeds trained at), with the trial's evaluation history."""
    by_prefix: dict[str, list] = {}
    for row in trial_rows:
        by_prefix.setdefault(row["run_id"].rsplit("-tune", 1)[0], []).append(row)
    for cond in conditions:
        prefixes = {r["run_id"][: -len(f"-s{r['seed']}")] for r in cond.runs if r["run_id"].endswith(f"-s{r['seed']}")}
        rows = [row for prefix in prefixes for row in by_prefix.get(prefix, [])]
        scored = []
        for row in rows:
            metrics, config = loads(row, "metrics", {}) or {}, yaml.safe_load(row["config_yaml"] or "") or {}
            by = (config.get("train") or {}).get("metric_for_best") or "accuracy"
            value = validation_score(metrics.get("validation"), by)
            if value is not None:
                scored.append((value, row, config))
        if len(prefixes) != 1 or not scored:
            continue
        value, row, config = max(scored, key=lambda item: item[0])
        path = Path(row["run_dir"]) / "history.jsonl"
        try:
            history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            history = []  # a trial's directory cleaned away: its recorded validation is the pick's score
        cond.trial = {
            "run_id": row["run_id"],
            "seed": row["seed"],
            "history": history,
            "config": config,
            "validation": (loads(row, "metrics", {}) or {}).get("validation") or {},
        }


def _fingerprint(predictions: pd.DataFrame) -> str:
    cols = [c for c in ("id", "text", "text_pair", "true_label") if c in predictions.columns]
    frame = predictions[cols].sort_values("id").astype(str)
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()[:16]


def _model_label(config: dict) -> str:
    return _short_name(str(config["model"]["name"]))


def groups(conditions: list[Condition]) -> list[Group]:
    """Split conditions into groups of the same (dataset, model, test examples, label set, training-set size)."""
    found: dict[tuple, Group] = {}
    for cond in conditions:
        by_key: dict[tuple, list[dict]] = {}
        for run in cond.runs:
            p = run["predictions"]
            labels = tuple(c[len("prob_") :] for c in p.columns if c.startswith("prob_"))
            dataset = run["info"].get("dataset") or _short_name(str(run["config"]["data"]["name"]))
            key = (dataset, _model_label(run["config"]), labels, _fingerprint(p), train_size(run))
            by_key.setdefault(key, []).append(run)
        for key, runs in by_key.items():
            if key not in found:
                first = runs[0]["predictions"]
                counts = (runs[0]["info"].get("label_counts") or {}).get("train")
                majority, source = (
                    (max(counts, key=lambda k: (counts[k], k)), "training split")
                    if counts
                    else (Counter(first["true_label"]).most_common(1)[0][0], "test split")
                )
                found[key] = Group(
                    key[0],
                    key[1],
                    list(key[2]),
                    sorted(first["id"]),
                    first.set_index("id")["true_label"],
                    majority,
                    source,
                    train_examples=key[4],
                )
            name = cond.name if len(by_key) == 1 else f"{cond.name} [{key[0]}]"
            found[key].conditions.append(Condition(name, cond.variant, cond.params, cond.method, runs, cond.trial))
    sizes = Counter(key[:4] for key in found)
    first_seen: dict[tuple, int] = {}  # a test set's groups stay where it was first met, its sizes smallest first
    for key, group in found.items():
        group.by_size = sizes[key[:4]] > 1
        first_seen.setdefault(key[:4], len(first_seen))
    return [g for _, g in sorted(found.items(), key=lambda kv: (first_seen[kv[0][:4]], kv[0][4] or 0))]


def train_size(run: dict) -> int | None:
    """How many training examples a run had (before augmentation); None for runs stored before this was recorded."""
    return (run["info"].get("sizes") or {}).get("train")


# --- per-run readings -------------------------------------------------------------------------------------------


def run_ece(run: dict, labels: list[str]) -> tuple[float, pd.DataFrame]:
    """Calibration of one run's model, the one a user would deploy (not of a vote over seeds)."""
    p = run["predictions"]
    probs = p[[f"prob_{n}" for n in labels]].to_numpy()
    return expected_calibration_error(probs.max(1), (p["true_label"] == p["pred_label"]).to_numpy())


def first_reaching(history: list[dict], target: float) -> dict | None:
    """The first evaluation whose validation accuracy reaches ``target`` (None if none does)."""
    return next((e for e in history if e.get("val_accuracy") is not None and e["val_accuracy"] >= target), None)


def time_to_target(history: list[dict], fractions=(0.95, 0.99)) -> dict:
    """First evaluation at which validation accuracy reached each fraction of the run's best: step and training
    seconds (None for runs written before the history recorded time)."""
    h = [e for e in history if e.get("val_accuracy") is not None]
    if not h:
        return {}
    best = max(e["val_accuracy"] for e in h)
    out = {}
    for f in fractions:
        hit = first_reaching(h, f * best)
        out[f"steps_to_{round(f * 100)}"] = hit["step"]
        out[f"seconds_to_{round(f * 100)}"] = hit.get("seconds")
    return out


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return float(np.mean(values)) if values else np.nan


def peak_memory(resources: dict) -> float | None:
    return resources.get("cuda_max_allocated_mb") or resources.get("peak_rss_mb")


def trained_mb(resources: dict) -> float:
    """Bytes a user must keep per task: the trained weights (adapter + head, or the unfrozen layers), not the
    tokenizer, config or frozen base. Runs written before tuneoff recorded it: the saved model's size."""
    return (resources.get("trained_bytes") or resources["checkpoint_bytes"]) / 1e6


def plateau(history: list[dict], metric: str, by: str = "accuracy", recorded: dict | None = None) -> float | None:
    """A run's validation ``metric`` at its plateau: the mean from its best evaluation (on ``by``, the run's
    ``metric_for_best``) to its last, not that best alone (the maximum of many noisy evaluations is optimistic, and
    more so for runs evaluated more often). A run without a history: its ``recorded`` validation."""
    key, best_key = f"val_{metric}", f"val_{by}"
    evals = [e for e in history or [] if e.get(key) is not None and e.get(best_key) is not None]
    if not evals:
        value = (recorded or {}).get(metric)
        return None if value is None else float(value)
    scores = [e[best_key] for e in evals]
    first = int(np.argmin(scores)) if by == "loss" else int(np.argmax(scores))
    return float(np.mean([e[key] for e in evals[first:]]))


def _by(config: dict) -> str:
    return (config.get("train") or {}).get("metric_for_best") or "accuracy"


def budget_reach(run: dict) -> tuple[float, str]:
    """How much a budget as long again could add to a run still improving, at its recent rate (its best over the last
    ``patience`` evaluations against its best before them, per evaluation, times its evaluations: a learning curve
    flattens, so this is generous), in validation accuracy; inf when it cannot be read. And the cap that ended it:
    ``train.max_steps`` when the run reached it, else ``train.epochs``."""
    train = run["config"].get("train") or {}
    evals = [e for e in run.get("history") or [] if e.get("val_accuracy") is not None]
    last = evals[-1].get("step") if evals else None
    cap = (
        "train.max_steps"
        if train.get("max_steps") and last is not None and last >= train["max_steps"]
        else "train.epochs"
    )
    window = max(2, int(train.get("patience") or 2))
    if len(evals) <= window:
        return float("inf"), cap
    values = [e["val_accuracy"] for e in evals]
    gain = max(values[-window:]) - max(values[:-window])
    return (max(gain, 0.0) / window * len(values) if gain > 0 else float("inf")), cap


def condition_row(c: Condition) -> dict:
    """The per-condition numbers of a summary table (statistics across conditions are added by ``verdict``)."""
    acc, f1 = c.seed_values("test", "accuracy"), c.seed_values("test", "macro_f1")
    eces = [run_ece(r, c.label_names)[0] for r in c.runs]
    res = [r["resources"] for r in c.runs]
    times = [time_to_target(r["history"]) for r in c.runs]
    convs = [r["info"].get("convergence") for r in c.runs]  # None: a run written before tuneoff recorded it
    still = [r for r, conv in zip(c.runs, convs) if conv and not conv.get("converged")]
    reach = [budget_reach(r) for r in still]
    trial = c.trial or {}
    std = lambda v: float(v.std(ddof=1)) if len(v) > 1 else float("nan")  # one seed: no spread to report, not 0
    return {
        "condition": c.name,
        "method": c.method,
        "seeds": len(c.runs),
        "accuracy": float(acc.mean()),
        "accuracy_std": std(acc),
        "accuracy_per_seed": " / ".join(f"{a:.3f}" for a in acc),
        "macro_f1_per_seed": " / ".join(f"{f:.3f}" for f in f1),
        "val_accuracy": float(c.seed_values("validation", "accuracy").mean()),
        "val_macro_f1": float(c.seed_values("validation", "macro_f1").mean()),
        **{
            f"plateau_{m}": _mean(
                plateau(r["history"], m, _by(r["config"]), r["metrics"].get("validation")) for r in c.runs
            )
            for m in ("accuracy", "macro_f1")
        },
        **{
            f"sel_{m}": (plateau(trial["history"], m, _by(trial["config"]), trial["validation"]) if trial else np.nan)
            for m in ("accuracy", "macro_f1")
        },
        "pick_seed": trial.get("seed"),
        "budget_gain": max((g for g, _ in reach), default=np.nan),
        "stopped_by": ", ".join(sorted({cap for _, cap in reach})),
        "macro_f1": float(f1.mean()),
        "macro_f1_std": std(f1),
        "ece": float(np.mean(eces)),
        "ece_std": std(np.array(eces)),
        "collapsed_runs": c.collapsed_runs(),
        "lr": _mean((r["config"].get("train") or {}).get("lr") for r in c.runs),
        "converged_runs": sum(bool(conv.get("converged")) for conv in convs if conv),
        "convergence_known": sum(bool(conv) for conv in convs),
        "not_converged": _convergence_text(convs),
        "train_examples": train_size(c.runs[0]),
        "trainable_params": res[0]["trainable_params"],
        "trainable_pct": res[0]["trainable_pct"],
        "trained_mb": _mean(trained_mb(r) for r in res),
        "checkpoint_mb": _mean(r["checkpoint_bytes"] / 1e6 for r in res),
        "peak_memory_mb": _mean(peak_memory(r) for r in res),
        "train_seconds": _mean(r["train_seconds"] for r in res),
        "train_samples_per_s": _mean(r["train_samples_per_s"] for r in res),
        "test_samples_per_s": _mean(r.get("test_samples_per_s") for r in res),
        **{k: _mean(t.get(k) for t in times) for k in ("steps_to_95", "seconds_to_95", "steps_to_99", "seconds_to_99")},
        **{f"param:{k}": v for k, v in c.params.items()},
    }


def per_class(
    conditions: list[Condition], confidence: float = 0.95, assumed_sd: float = 0.083, prior: SeedPrior | None = None
) -> pd.DataFrame:
    """Precision, recall and F1 per class and condition (mean over seeds), F1 with its interval over seeds and test
    examples (``significance.class_f1_values``: a rare class's F1 rests on few examples, and the interval says how few)."""
    rows = []
    for c in conditions:
        ids, labels = list(c.runs[0]["predictions"]["id"]), c.label_names
        stacked = np.stack(
            [
                class_f1_values(*label_ids(r["predictions"].set_index("id").loc[ids], labels), len(labels))
                for r in c.runs
            ],
            axis=1,
        )  # (n, seeds, classes)
        for k, name in enumerate(c.label_names):
            vals = [r["metrics"]["test"]["per_class"][name] for r in c.runs]
            low, high = compare({c.name: stacked[:, :, k]}, assumed_sd=assumed_sd, prior=prior).interval(
                c.name, confidence
            )
            rows.append(
                {
                    "condition": c.name,
                    "class": name,
                    "precision": np.mean([v["precision"] for v in vals]),
                    "recall": np.mean([v["recall"] for v in vals]),
                    "f1": np.mean([v["f1-score"] for v in vals]),
                    "f1_ci_low": low,
                    "f1_ci_high": high,
                    "support": vals[0]["support"],
                }
            )
    return pd.DataFrame(
        rows, columns=["condition", "class", "precision", "recall", "f1", "f1_ci_low", "f1_ci_high", "support"]
    )


def by_class(classes: pd.DataFrame, value: str = "f1") -> pd.DataFrame:
    """One of ``per_class``'s metrics (f1, recall, precision) as a row per class (label order) and a column per
    condition (group order), with each class's number of test examples: where a method's accuracy hides a class it
    never predicts."""
    table = classes.pivot_table(index="class", columns="condition", values=value, aggfunc="first", sort=False)
    table.columns.name = None
    table = table[list(dict.fromkeys(classes.condition))]  # group order
    return table.assign(test_examples=classes.groupby("class", sort=False).support.first().astype(int)).reset_index()


def f1_by_class_with_intervals(classes: pd.DataFrame) -> pd.DataFrame:
    """``by_class(classes, "f1")`` with each cell "F1 (low–high)", the 95% interval over seeds and test examples."""
    cells = [f"{r.f1:.2f} ({r.f1_ci_low:.2f}–{r.f1_ci_high:.2f})" for r in classes.itertuples()]
    return by_class(classes.assign(f1_interval=cells), "f1_interval")


def _convergence_text(convs: list[dict | None]) -> str:
    """Why a condition's runs did not converge, one clause per status with how many of its runs it covers: "2 of 3
    runs still improving: ...", each run's detail after it (the method zoo's lines repeated the same words per run,
    without saying how many runs of the condition had converged)."""
    known = [conv for conv in convs if conv]
    by_status: dict[str, list[str]] = {}
    for conv in known:
        if not conv.get("converged"):
            head, sep, detail = conv["reason"].partition(": ")
            # The reason opens with its status in other words ("grossly under-confident: mean confidence ..."):
            # keep the detail only; a reason without that opening stays whole.
            by_status.setdefault(conv["status"], []).append(
                detail if sep and conv["status"] in head else conv["reason"]
            )
    return "; ".join(
        f"{len(details)} of {len(known)} run{'s' if len(known) > 1 else ''} {status}: "
        + "; ".join(dict.fromkeys(details))
        for status, details in sorted(by_status.items())
    )
