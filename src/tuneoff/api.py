"""The Python API: what the command line does, as functions a notebook can call.

```python
import tuneoff

run = tuneoff.train(model="minilm", data="rotten_tomatoes", method="lora", method__r=8, train__epochs=1)
run.test_accuracy, run.resources["train_seconds"]
run.predict(["a triumph", "a mess"])              # a DataFrame: label and each class's probability

study = tuneoff.run_study("default")             # the built-in default study (or a YAML path, or a dict)
study                                            # in Jupyter: the verdict and the summary table
study.summary, study.decisions, study.trials     # pandas DataFrames
tuneoff.load_study("results/default", margin=0.02)   # the stored results read again under other settings
tuneoff.plan_study("studies/offline/report4_rank_sweep.yaml")   # what it can decide, before it trains
```

Keyword arguments with a double underscore are dotted config keys (``method__r=8`` is ``method.r=8``); ``overrides``
takes them as a dict or as ``key=value`` strings. Wherever a data file is named (``data``, ``data__test_file``, a
study's ``base.data.name``), a pandas DataFrame may stand in for it (stored once as a file the run config names:
``tuneoff.data.frames``). The command line calls these same functions.
"""

from __future__ import annotations

import ast
import base64
import html
import json
import logging
import multiprocessing
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tuneoff.analysis.verdict import GroupVerdict
from tuneoff.config import RunConfig, build_config, load_config
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import atomic_write_text, read_json, safe_name
from tuneoff.data.corpus import load_corpus
from tuneoff.data.files import check_local_columns, text_column
from tuneoff.data.frames import dataset_dict_files, is_dataset_dict, stored_frames
from tuneoff.data.inspection import inspect_corpus, model_max_length
from tuneoff.models.assets import resolve_model
from tuneoff.models.loading import load_tokenizer
from tuneoff.report.build import build_report
from tuneoff.report.plots import plot_lengths
from tuneoff.results.store import Store
from tuneoff.study.execution import execute
from tuneoff.study.packing import free_cores, make_executor
from tuneoff.study.spec import StudySpec, expand, load_spec, spec_from_dict
from tuneoff.training.launcher import is_main_process

log = logging.getLogger(__name__)

# --- overrides -------------------------------------------------------------------------------------------------


def _overrides(overrides: dict | list[str] | None, dotted: dict) -> list[str]:
    """``key=value`` strings from a dict or list of overrides and ``section__key=value`` keyword arguments."""
    if overrides is not None and not isinstance(overrides, (dict, list, tuple)):
        raise TuneoffError(
            f"overrides: give a dict ({{'train.epochs': 2}}) or a list of 'key=value' strings, not "
            f"{type(overrides).__name__} ({overrides!r})."
        )
    items = list(overrides.items()) if isinstance(overrides, dict) else []
    out = [str(o) for o in overrides] if isinstance(overrides, (list, tuple)) else []
    items += [(k.replace("__", "."), v) for k, v in dotted.items()]
    items = [(k, stored_frames(v, k)) for k, v in items]
    return out + [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in items]


# --- one run --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A finished run: where it is, how it did, what it cost; it predicts with its saved model."""

    path: Path
    metrics: dict
    resources: dict
    info: dict
    config: dict
    _model: Any = field(default=None, repr=False)

    @property
    def test_accuracy(self) -> float:
        return self.metrics["test"]["accuracy"]

    def __repr__(self) -> str:
        test = self.metrics.get("test", {})
        return (
            f"Run({str(self.path)!r}: {self.info.get('method', '?')} on {self.info.get('model', '?')} / "
            f"{self.info.get('dataset', '?')}, test accuracy {test.get('accuracy', float('nan')):.4f}, macro-F1 "
            f"{test.get('macro_f1', float('nan')):.4f}, {self.resources.get('trainable_params', 0):,} trainable)"
        )

    def warnings(self) -> list[str]:
        """What a person should know before using this run, from what it recorded: it predicts one class for every
        test example, it scores no better than always answering the most common class, it did not converge."""
        test, out = self.metrics.get("test", {}), []
        per_class = test.get("per_class") or {}
        found = [name for name, v in per_class.items() if v.get("recall", 0) > 0]
        counts = (self.info.get("label_counts") or {}).get("test") or {}
        majority = max(counts.values()) / sum(counts.values()) if counts else None
        if len(per_class) > 1 and len(found) <= 1:
            out.append(
                f"it predicts one class ({found[0] if found else 'none'}) for every test example: it learned "
                "nothing a classifier needs"
            )
        elif majority is not None and test.get("accuracy", 1.0) <= majority + 0.01:
            out.append(
                f"its test accuracy {test['accuracy']:.1%} is no better than always answering the most common "
                f"class ({majority:.1%})"
            )
        convergence = self.info.get("convergence") or {}
        if convergence and not convergence.get("converged"):
            out.append(f"it did not converge ({convergence.get('status')}: {convergence.get('reason')})")
        return out

    @property
    def label_names(self) -> list[str]:
        return list(self.info.get("label_names") or [])

    def per_class(self) -> pd.DataFrame:
        """Test precision, recall, F1 and support per class."""
        rows = [{"class": name, **values} for name, values in self.metrics["test"]["per_class"].items()]
        return pd.DataFrame(rows).rename(columns={"f1-score": "f1"})

    def predict(self, texts, text_pairs=None, batch_size: int = 64, undo_class_weights: bool = False) -> pd.DataFrame:
        """Labels and class probabilities for a list of strings (or a Series), with the run's saved model (loaded
        once, with the loader its method needs). ``undo_class_weights``: a run trained with ``train.class_weight``
        gives the probabilities of the data as it is, the weights divided out (``saved.class_weight_shift``)."""
        from tuneoff.training.saved import (
            class_weight_shift,
            load_saved_model,
            model_labels,
            score_frame,
        )

        frame = _texts_frame(texts, text_pairs)
        if self._model is None:
            self._model = load_saved_model(self.path, _device())
        model, tokenizer = self._model
        shift = class_weight_shift(self.path, model_labels(model)) if undo_class_weights else None
        out = score_frame(
            model,
            tokenizer,
            frame,
            self.config.get("data", {}).get("max_length", 512),
            batch_size=batch_size,
            shift=shift,
        )
        return out.drop(columns=["id"]).rename(columns={"pred_label": "label"})

    def evaluate(
        self,
        data: str | pd.DataFrame | None = None,
        split: str = "test",
        overrides: dict | list | None = None,
        undo_class_weights: bool = False,
        **dotted,
    ) -> dict:
        """Metrics of the saved model on a split of its own or another dataset, or on every row of a labeled file
        (``undo_class_weights``: as ``predict``'s)."""
        from tuneoff.training.saved import evaluate_run

        metrics, _ = evaluate_run(
            self.path, stored_frames(data), split, _overrides(overrides, dotted), undo_class_weights
        )
        return metrics

    def _repr_html_(self) -> str:
        test, r = self.metrics["test"], self.resources
        rows = [
            ("method", self.config.get("method", {}).get("name")),
            ("test accuracy", f"{test['accuracy']:.4f}"),
            ("macro-F1", f"{test['macro_f1']:.4f}"),
            ("trainable", f"{r['trainable_params']:,} ({r['trainable_pct']:.3g}%)"),
            ("train time", f"{r['train_seconds']:.1f} s"),
            ("directory", str(self.path)),
        ]
        return (
            "<table>"
            + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
            + "</table>"
        )


def _texts_frame(texts, text_pairs=None) -> pd.DataFrame:
    """The texts ``predict`` was given, checked as a data file's are (``data.files.text_column``: the one place that
    decides what counts as text): a list of strings, none empty, None or a number."""

    def listed(values, what: str) -> list:
        if values is None or isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
            raise TuneoffError(
                f"predict takes {what} as a list of strings (got {type(values).__name__}): "
                'run.predict(["a triumph", "a mess"]).'
            )
        values = list(values)
        if not values:
            raise TuneoffError(f"predict got no {what}: give at least one string.")
        return values

    texts = listed(texts, "texts")
    frame = pd.DataFrame({"id": [str(i + 1) for i in range(len(texts))], "text": pd.Series(texts, dtype=object)})
    frame["text"] = text_column(frame, "text", "run.predict's texts", "texts")
    if text_pairs is not None:
        pairs = listed(text_pairs, "text_pairs")
        if len(pairs) != len(texts):
            raise TuneoffError(f"predict got {len(texts)} texts and {len(pairs)} text_pairs: give one pair per text.")
        frame["text_pair"] = text_column(
            frame.assign(text_pair=pd.Series(pairs, dtype=object)),
            "text_pair",
            "run.predict's text_pairs",
            "text_pairs",
        )
    return frame


def load_run(path: str | Path) -> Run:
    """A finished run directory (``tuneoff train``'s or a study's)."""
    path = Path(path)
    if not (path / "run.json").is_file():
        raise TuneoffError(f"{path} is not a finished tuneoff run (no run.json).")
    return Run(
        path,
        read_json(path / "metrics.json"),
        read_json(path / "resources.json"),
        read_json(path / "run.json"),
        yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {},
    )


def train(
    config: str | Path | dict | RunConfig | None = None,
    *,
    model: str | None = None,
    data: str | pd.DataFrame | None = None,
    method: str | None = None,
    overrides: dict | list | None = None,
    results: str | Path = "results",
    progress: bool = True,
    resume: bool = False,
    threads: int | None = None,
    **dotted,
) -> Run:
    """Fine-tune one model with one method; the run is written to its directory and indexed in ``results``.

    ``config`` is a YAML path, a mapping or a RunConfig; ``model``/``data``/``method`` choose those sections by name
    (``data`` may be a DataFrame with ``text`` and ``label`` columns, or others named by ``data__text_column`` and
    ``data__label_column``); ``overrides`` and ``section__key=value`` keywords set any field (``train__epochs=1``)."""
    from tuneoff.training.retry import train_with_oom_retry

    cfg = _run_config(config, model, data, method, _overrides(overrides, dotted))
    check_local_columns(cfg.data)  # every missing column in one message, before torch and the model load
    _set_threads(threads)
    result = train_with_oom_retry(cfg, progress=progress, resume=resume)
    run = load_run(result.run_dir)
    warnings = run.warnings() if is_main_process() else []
    if warnings:  # a collapsed run is not a success, said aloud (once, however many things are wrong)
        log.warning(
            f"warning: run {run.path.name}: {'; '.join(warnings)}. A longer budget (train.epochs), another "
            "learning rate (tuneoff run tunes it) or another method may help"
        )
    if is_main_process():  # one record per run, however many processes trained it
        store = Store(results)  # indexed with the studies' runs: `tuneoff runs list` finds it
        try:
            store.record_single(
                run.path.resolve(), (run.path / "config.yaml").read_text(), run.metrics, run.resources, run.info
            )
        finally:
            store.close()
    return run


def _set_threads(threads: int | None) -> None:
    """Threads for a run in this process: as given; by default torch's own choice (the cores), and when other work
    holds some of them (``study.packing.free_cores``) the run says so and what to pass: two threads beside a busy core
    ran 6x slower than one (the same default in every process keeps a resumed run's arithmetic its first run's)."""
    import torch

    if threads is not None:
        if threads < 1:
            raise TuneoffError(f"threads={threads}: give 1 or more.")
        torch.set_num_threads(threads)
        return
    total, free, load = free_cores()
    if free < min(total, torch.get_num_threads()):
        log.warning(
            f"other work is using about {total - free} of the {total} core(s) this process may use (load {load:.1f}) "
            f"and this run will use {torch.get_num_threads()} thread(s), which may fight over a busy core: if it is "
            f"slow, stop it (Ctrl-C saves a checkpoint) and run it again with --threads {free} --resume"
        )


def _run_config(config, model, data, method, overrides: list[str]) -> RunConfig:
    if is_dataset_dict(data):  # its splits: train as the data, validation and test as files of their own
        files = dataset_dict_files(data)
        data = files.pop("name")
        overrides = [*(f"data.{k}={v}" for k, v in files.items()), *overrides]
    names = {"model": model, "data": stored_frames(data), "method": method}
    if isinstance(config, RunConfig):
        config = config.model_dump(mode="json")
    if isinstance(config, dict):
        return build_config(stored_frames(config, ""), overrides, "the config mapping", names=names)
    return load_config(config, overrides, names=names)


# --- studies --------------------------------------------------------------------------------------------------


@dataclass
class StudyResult:
    """A study's stored results, analysed: one verdict per group of comparable conditions, tables as DataFrames."""

    name: str
    directory: Path
    report: Path
    verdicts: list[GroupVerdict]
    trials: pd.DataFrame

    @property
    def summary(self) -> pd.DataFrame:
        """One row per condition (and the majority-class baseline) of every group: accuracy with its interval, costs."""
        return _stacked([v.table.assign(dataset=v.group.dataset, model=v.group.model) for v in self.verdicts])

    @property
    def decisions(self) -> pd.DataFrame:
        """The verdict's comparisons: each condition against the best on validation and against the baseline."""
        return _stacked([v.decisions.assign(dataset=v.group.dataset) for v in self.verdicts if v.decisions is not None])

    @property
    def comparisons(self) -> pd.DataFrame:
        """Every pair (exploratory), with McNemar per seed."""
        return _stacked([v.pairs.assign(dataset=v.group.dataset) for v in self.verdicts if len(v.pairs)])

    @property
    def recommended(self) -> dict[str, str | None]:
        return {v.group.title: v.recommended for v in self.verdicts}

    def verdict_text(self) -> str:
        """Each group's verdict card, then its whole verdict."""
        return "\n".join(
            f"== {v.group.title}\n"
            + "\n".join("  " + line.replace("**", "") for line in v.card.lines())
            + "\n  --\n"
            + "\n".join("  " + line.replace("**", "") for line in v.lines)
            for v in self.verdicts
        )

    def __str__(self) -> str:
        return self.verdict_text()

    def _repr_html_(self) -> str:
        from tuneoff.report.sections import SHOWN, card_html, md_inline, table_html

        parts = [f"<h3>Study {html.escape(self.name)}</h3>"]
        for v in self.verdicts:
            parts.append(
                card_html(v)
                + "<details><summary>the whole verdict</summary>"
                + "".join(f"<p>{md_inline(line)}</p>" for line in v.lines)
                + "</details>"
            )
            parts.append(table_html(v.table[[c for c in SHOWN if c in v.table.columns]]))
        parts.append(f"<p>Full report: <code>{html.escape(str(self.report))}</code></p>")
        return "".join(parts)


def _stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_study(
    study: str | Path | dict | StudySpec,
    *,
    results: str | Path = "results",
    resume: bool = False,
    yes: bool = False,
    overrides: dict | list | None = None,
    executor: str = "local",
    progress: bool = False,
    parallel: int | str | None = None,
    threads: int | None = None,
    **executor_options,
) -> StudyResult:
    """Run a study (a YAML path, a mapping, or "default" for the built-in one), store every run, build its report
    and return the analysed results. ``parallel``: runs at once on this machine (``auto``, the default unless
    ``TUNEOFF_PARALLEL`` says otherwise, packs as many as the cores, memory or GPU hold); ``threads`` per run.
    ``executor_options``: ``address``, ``cpus_per_run``, ``gpus_per_run``, ``max_retries``, ``processes_per_run``,
    ``isolate`` (each run in a new process: exact CPU peaks; as the command line's options)."""
    _not_from_a_worker_or_an_unguarded_script()
    spec = study_spec(study, _overrides(overrides, {}))
    parallel = parallel or os.environ.get("TUNEOFF_PARALLEL", "auto")
    runs = expand(spec)
    runner = make_executor(
        executor,
        progress=progress,
        parallel=parallel,
        threads=threads,
        jobs=len(runs),
        gpu_peak_mb=_gpu_peak(runs) if executor == "local" and parallel == "auto" else None,
        **executor_options,
    )
    execute(spec, results, resume=resume, yes=yes, progress=progress, executor=runner)
    return load_study(Path(results) / safe_name(spec.name))


GUARD = (
    "run_study starts worker processes with multiprocessing's spawn, which imports the calling script again in "
    'each worker: a script without `if __name__ == "__main__":` around its calls would run the study again in '
    'every worker, each starting more. Put the script\'s calls under `if __name__ == "__main__":`.'
)


def _not_from_a_worker_or_an_unguarded_script() -> None:
    """Refuse, before any worker starts, a call from a script whose top level is not guarded (the workers would each
    run it again), and, as a net, any call made while a spawned worker imports its parent's script."""
    main = sys.modules.get("__main__")
    if multiprocessing.parent_process() is not None and getattr(main, "__name__", "") == "__mp_main__":
        raise TuneoffError(f"run_study was called while a worker process imported its parent's script. {GUARD}")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if (
        not path
        or not str(path).endswith(".py")
        or (spec is not None and spec.name.split(".")[0] in ("tuneoff", "pytest"))
    ):
        return  # a notebook, the REPL, tuneoff's own command line, a test runner: nothing re-imported calls it
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return
    guarded = any(
        isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)
        for node in tree.body
    )
    if not guarded:
        raise TuneoffError(f"{path}: {GUARD}")


def _gpu_peak(runs) -> float | None:
    """The largest planned peak memory (MB) of the study's runs on this machine's GPU, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    from tuneoff.training.planner import plan_as_trained

    configs = {r.variant: r.config for r in runs}
    peaks = []
    for name, config in configs.items():
        config = config.model_copy(update={"train": config.train.model_copy(update={"device": "cuda"})})
        peaks.append(plan_as_trained(config, name).total_mb)
    return max(peaks)


def study_spec(study: str | Path | dict | StudySpec | None, overrides: list[str] = ()) -> StudySpec:
    """The study a call names: a StudySpec, a mapping, a YAML path, or "default" for the built-in one. Nothing is a
    mistake, not a request for the default study (which trains for minutes)."""
    if isinstance(study, StudySpec):
        return study
    if isinstance(study, dict):
        return spec_from_dict(stored_frames(study, ""), overrides)
    if study is None or not isinstance(study, (str, Path)):
        raise TuneoffError(
            f'Give a study: a YAML file\'s path, a mapping, or "default" for the built-in default study '
            f"(got {study!r})."
        )
    if str(study) == "default" and not Path(study).exists():
        return load_spec(None, overrides)
    return load_spec(study, overrides)


def plan_study(study: str | Path | dict | StudySpec, overrides: list[str] = ()) -> pd.DataFrame:
    """What a study can decide before it trains (``study.design``): per group of conditions, its test examples and
    seeds, the difference it resolves (80% chance), the chance that a method as good as the best is shown within the
    margin, and the seeds or test examples that would make that chance 80%. Nothing is trained or downloaded."""
    from tuneoff.study.design import plan

    return pd.DataFrame([asdict(p) for p in plan(study_spec(study, list(overrides)))])


def load_study(directory: str | Path, out: str | Path | None = None, **analysis) -> StudyResult:
    """A study's stored results (``results/<study>``) analysed again, its report rebuilt (in ``out``, default
    ``<directory>/report``: a read-only results directory is reported elsewhere); ``analysis`` overrides the study's
    analysis settings (``margin``, ``alpha``, ``prefer``, ``max_peak_memory_mb``, ...). Nothing is trained."""
    directory = Path(directory)
    if not (directory / "study.yaml").is_file():
        raise TuneoffError(f"{directory} is not a study results directory (no study.yaml). Give results/<study>.")
    name = load_spec(directory / "study.yaml").name
    report, verdicts, trials = build_report(name, directory.parent, analysis or None, out)
    return StudyResult(name, directory, report, verdicts, trials)


# --- data -----------------------------------------------------------------------------------------------------


def inspect(
    data: str | pd.DataFrame,
    model: str = "minilm",
    overrides: dict | list | None = None,
    out: str | Path | None = None,
    **dotted,
) -> tuple[dict, Path]:
    """Know a dataset before training: per-split counts, labels, token lengths, duplicates, leakage and the
    ``max_length`` to use; writes ``inspect.json`` and two plots into ``out`` (default ``inspect/<dataset>``)."""
    from transformers import AutoConfig

    overrides = _overrides(overrides, dotted)
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise TuneoffError(f"inspect takes only data.* overrides, not {bad}.")
    cfg = build_config({}, overrides, names={"data": stored_frames(data), "model": model})
    corpus = load_corpus(cfg.data)
    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source)
    config = AutoConfig.from_pretrained(source)
    report = inspect_corpus(corpus, tokenizer, model_max_length(config, tokenizer), getattr(config, "hidden_size", 768))
    out_dir = Path(out) if out else Path("inspect") / safe_name(corpus.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    histogram, boxplot = plot_lengths(report)
    (out_dir / "histogram.png").write_bytes(base64.b64decode(histogram))
    (out_dir / "boxplot.png").write_bytes(base64.b64decode(boxplot))
    atomic_write_text(
        out_dir / "inspect.json", json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=2)
    )
    return report, out_dir


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
