"""What the terminal shows: tables and summaries the CLI prints (rich), kept readable at 80 columns; how much it shows
(--quiet, --verbose) and how a user error reaches it (one paragraph, exit code 2)."""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import typer
import yaml
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from tuneoff.core.errors import Stopped, TuneoffError
from tuneoff.core.outputs import terminal_text
from tuneoff.training import stop
from tuneoff.training.launcher import stopped_rank

_VERBOSITY = {"level": 0}


def set_verbosity(level: int) -> None:
    """-1 quiet, 0 normal, 1 verbose (the --quiet / --verbose flags)."""
    _VERBOSITY["level"] = level


def verbosity() -> int:
    return _VERBOSITY["level"]


class _Console(Console):
    """Every string it prints (a line, a table's title, header or cell, an error) passes ``core.outputs.terminal_text``:
    a study, variant or label name with escape sequences in it is shown, never run by the terminal (rich's own styles
    are added after, as usual)."""

    def render_str(self, text: str, **kwargs):
        return super().render_str(terminal_text(text), **kwargs)


def console(stderr: bool = False) -> Console:
    return _Console(stderr=stderr)  # made per call so the terminal width (COLUMNS) is read when printing


def say(message: str) -> None:
    """Progress lines hold run ids, paths and error text: printed as they are, never read as rich markup."""
    console().print(message, markup=False, highlight=False, soft_wrap=True)


def user_errors(fn):
    """Bad input -> one paragraph on stderr and exit code 2; anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Stopped as exc:  # asked to stop: not an error, and the shell learns which signal it was
            console(stderr=True).print(f"[yellow]{escape(str(exc))}[/]", highlight=False, soft_wrap=True)
            if stopped_rank(exc.signal_name):  # one of a run's processes: the command that launched it exits so
                raise typer.Exit(0) from None
            raise typer.Exit(stop.exit_code(exc.signal_name)) from None
        except TuneoffError as exc:
            console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:  # a second Ctrl-C: at once, without the checkpoint a first one would have saved
            console(stderr=True).print(
                "[yellow]Interrupted at once (a second Ctrl-C): runs in flight did not save a "
                "checkpoint at this step; `--resume` continues each from its last checkpoint.[/]",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None

    return wrapper


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=0)


def fitted(
    title: str,
    columns: list[str],
    rows: list[list[str]],
    *,
    wrap: tuple[str, ...] = (),
    numeric: tuple[str, ...] = (),
    caption: str | None = None,
    width: int | None = None,
) -> RenderableType:
    """A table when it fits the terminal without cutting a word or a number; else one block per row (its first cell,
    then ``column: value`` for the others, wrapped at word boundaries). Rich squeezes a table that is too wide by
    cutting headers and numbers with an ellipsis ("3,697…"), which at 80 columns made ``plan`` and ``datasets``
    unreadable. ``wrap`` names the columns whose text may fold onto several lines (given at least 16 characters);
    every other column keeps its longest cell whole. ``numeric`` columns are right-aligned."""
    width = width or console().width
    need = 1 + 3 * len(columns)
    for i, column in enumerate(columns):
        cells = [str(row[i]) for row in rows]
        if column in wrap:
            need += max(16, _longest_word(column), *(_longest_word(c) for c in cells))
        else:
            need += max(_longest_word(column), *(len(c) for c in cells))
    if need <= width:
        table = Table(title=title, caption=caption)
        for i, column in enumerate(columns):
            longest = max((len(str(row[i])) for row in rows), default=0)
            table.add_column(
                column,
                justify="right" if column in numeric else "left",
                **({"overflow": "fold"} if column in wrap else {"min_width": max(longest, 1)}),
            )
        for row in rows:
            table.add_row(*map(str, row))
        return table
    blocks: list[RenderableType] = [Text(title, style="bold")]
    for row in rows:
        fields = [f"{column}: {value}" for column, value in zip(columns[1:], row[1:]) if str(value) != ""]
        blocks += [Text(str(row[0]), style="bold"), Padding(Text("; ".join(fields)), (0, 0, 0, 2))]
    if caption:
        blocks.append(Text(caption, style="dim"))
    return Group(*blocks)


def metrics_table(title: str, metrics: dict, resources: dict | None = None) -> Table:
    table = Table(title=title, show_header=False)
    for key in ("accuracy", "macro_f1", "weighted_f1", "loss", "n"):
        if key in metrics:
            value = metrics[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for key in (
        "trainable_params",
        "trainable_pct",
        "train_seconds",
        "train_samples_per_s",
        "train_tokens_per_s",
        "peak_rss_mb",
        "cuda_max_allocated_mb",
        "checkpoint_bytes",
    ):
        if resources and resources.get(key) is not None:
            value = resources[key]
            table.add_row(key, f"{value:,.2f}" if isinstance(value, float) else f"{value:,}")
    return table


def next_steps(run_dir: Path) -> str:
    """What to do with a finished run, printed after ``tuneoff train``."""
    return (
        f"next: tuneoff evaluate {run_dir} --data <dataset or labeled file>  |  tuneoff predict {run_dir} <file.csv> "
        "--out predictions.csv  |  compare methods on your data: tuneoff run (a study; tuneoff run --dry-run first)"
    )


def predictions_table(frame) -> Table:
    """Texts with their predicted label and each class's probability (``tuneoff predict RUN --text ...``)."""
    probs = [c for c in frame.columns if c.startswith("prob_")]
    table = Table(show_header=True, title="predictions", title_justify="left")
    for column in ("label", *probs, "text"):
        table.add_column(
            column[len("prob_") :] if column.startswith("prob_") else column,
            overflow="fold",
            justify="right" if column.startswith("prob_") else "left",
        )
    for values in frame.to_dict("records"):  # records, not tuples: a label name need not be a Python identifier
        table.add_row(str(values["label"]), *(f"{values[c]:.3f}" for c in probs), str(values["text"]))
    return table


def verdict_lines(report_dir: Path) -> list[str]:
    """The recommendation of each group, as the report wrote it (verdict.json), for the terminal."""

    lines = []
    verdict = json.loads((report_dir / "verdict.json").read_text())
    for group in verdict["groups"] if isinstance(verdict, dict) else verdict:  # a list: reports of tuneoff 0.1
        size = f"{group['train_examples']:,} training examples, " if group.get("train_examples") else ""
        lines.append(f"== {group['dataset']} · {group['model']} ({size}{group['test_examples']:,} test examples)")
        # the verdict card where the report has one (tuneoff 0.3), else the verdict's lines
        lines += ["  " + line.replace("**", "") for line in group.get("card_lines") or group["lines"]]
    if any(g.get("card_lines") for g in (verdict["groups"] if isinstance(verdict, dict) else [])):
        lines.append(f"the whole verdict, its tables and plots: {report_dir / 'summary.md'}")
    return lines


def run_summary(row: dict) -> Table:
    cfg = yaml.safe_load(row["config_yaml"]) or {}
    m, r, info = row.get("metrics") or {}, row.get("resources") or {}, row.get("run_info") or {}
    table = Table(title=f"{row['run_id']} ({row['study']})", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    lines = [
        ("status", row["status"] + (f": {row['error'].strip().splitlines()[-1]}" if row.get("error") else "")),
        (
            "method",
            f"{cfg.get('method', {}).get('name')} {', '.join(f'{k}={v}' for k, v in (cfg.get('method') or {}).items() if k != 'name' and v is not None)}",
        ),
        (
            "model / data",
            f"{cfg.get('model', {}).get('name')} / {info.get('dataset') or cfg.get('data', {}).get('name')}",
        ),
        (
            "seed, lr, epochs",
            f"{cfg.get('train', {}).get('seed')}, {cfg.get('train', {}).get('lr')}, {cfg.get('train', {}).get('epochs')}",
        ),
    ]
    if m:
        test, val = m["test"], m.get("validation", {})
        lines += [
            (
                "test",
                f"accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} on {test.get('n', '?'):,} examples",
            ),
            ("validation", f"accuracy {val.get('accuracy', float('nan')):.4f} (best at step {m.get('best_step')})"),
        ]
    if r:
        peak = r.get("cuda_max_allocated_mb") or r.get("peak_rss_mb")
        lines += [
            ("trainable", f"{r['trainable_params']:,} ({r['trainable_pct']:.3g}%)"),
            ("time", f"{r['train_seconds']:.1f} s training, {r['train_samples_per_s']:.1f} samples/s"),
            (
                "memory",
                f"{peak:,.0f} MB peak ({'CUDA allocated' if r.get('cuda_max_allocated_mb') else 'RSS'})"
                if peak
                else "n/a",
            ),
            (
                "saved",
                f"{r.get('checkpoint_bytes', 0) / 1e6:.1f} MB ({r.get('trained_bytes', 0) / 1e6:.2f} MB trained weights)",
            ),
        ]
    lines += [
        ("device", str(row.get("device") or "")),
        ("directory", str(row.get("run_dir") or "")),
        ("finished", str(row.get("finished") or "")),
    ]
    for key, value in lines:
        table.add_row(key, value)
    return table


def inspect_tables(c, report: dict, model: str) -> None:
    """`tuneoff inspect`: per-split numbers, labels, truncation and time per max_length, warnings."""
    from tuneoff.data.inspection import summary_rows

    for note in report.get("notes") or []:  # how the splits were made (a held-out test split, validation from train)
        c.print(f"data: {escape(str(note))}", highlight=False)
    # splits as columns, statistics as rows: three or four splits fit 80 columns where twelve statistics did not
    rows = summary_rows(report).set_index("split").T
    cells = [
        [stat, *(f"{v:g}" if isinstance(v, float) else str(v) for v in values)] for stat, values in rows.iterrows()
    ]
    c.print(
        fitted(
            f"{report['dataset']} — tokens counted with {model}'s tokenizer",
            ["", *rows.columns],
            cells,
            numeric=tuple(rows.columns),
        )
    )
    labels = Table(title="labels (count / share)")
    labels.add_column("label")
    for split in report["splits"]:
        labels.add_column(split)
    for name in report["label_names"]:
        labels.add_row(
            name,
            *[
                f"{s['labels'].get(name, {}).get('count', 0)} / {s['labels'].get(name, {}).get('share', 0):.1%}"
                for s in report["splits"].values()
            ],
        )
    c.print(labels)
    lengths = [n for n in report["splits"]["train"]["truncated_share"] if int(n) in report["relative_time"]]
    c.print(
        fitted(
            "each max_length: training examples truncated, and training time relative to the recommended",
            ["max_length", "truncated", "time"],
            [
                [
                    str(n),
                    f"{report['splits']['train']['truncated_share'][n]:.1%}",
                    f"{report['relative_time'][int(n)]:.2f}x",
                ]
                for n in lengths
            ],
            numeric=("truncated", "time"),
        )
    )
    for split, s in report["splits"].items():
        if s["imbalanced"]:
            c.print(
                f"[yellow]warning:[/] {split} is imbalanced (largest class ≥ 3× the smallest)"
                + (
                    "; train.class_weight=balanced weighs each class equally in the loss, and "
                    "train.metric_for_best=macro_f1 picks checkpoints for every class."
                    if split == "train"
                    else "."
                )
            )
    leaks = {k: v for k, v in report["leakage"].items() if v}
    if leaks:
        c.print(f"[yellow]warning:[/] texts shared across splits (leakage): {leaks}")
    c.print(
        f"recommended max_length: [bold]{escape(str(report['recommended_max_length']))}[/] (truncates "
        f"{report['recommended_truncates']:.1%} of training examples; data.max_length=auto uses it)"
    )


PLAN_COLUMNS = (
    "run",
    "trainable",
    "weights MB",
    "grads MB",
    "optimizer MB",
    "activations MB",
    "workspace MB",
    "peak MB",
    "GFLOP/step",
)
PEAK_RULE = (
    "peak = weights + optimizer + the larger of activations and gradients (both with gradient accumulation) "
    "+ the CUDA workspace"
)


def _plan_cells(p) -> list[str]:
    return [
        p.name,
        f"{p.trainable_params:,}",
        *(
            f"{v:,.1f}"
            for v in (
                p.weights_mb,
                p.gradients_mb,
                p.optimizer_mb,
                p.activations_mb,
                p.workspace_mb,
                p.total_mb,
                p.gflops_per_step,
            )
        ),
    ]


def plan_title(batch_size: int | None, seq_len: int | None, precision: str, device: str) -> str:
    return (
        f"plan: one training step, batch {batch_size or 'as configured'}, length {seq_len or 'data.max_length'}, "
        f"{precision}, on {device}"
    )


def plan_table(plans, title: str) -> RenderableType:
    return fitted(
        title, list(PLAN_COLUMNS), [_plan_cells(p) for p in plans], numeric=PLAN_COLUMNS[1:], caption=PEAK_RULE
    )


def plan_markdown(plans, title: str) -> str:
    """`tuneoff plan --out`: the table as Markdown, headed with what produced it."""

    from tuneoff.core.provenance import versions

    v = versions()
    lines = [
        f"# {title}",
        "",
        f"`{shlex.join(['tuneoff', *sys.argv[1:]])}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, "
        f"{platform.machine()} CPU, Python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, "
        f"peft {v['peft']}. Counted by one real forward + backward + optimizer step on the CPU "
        f"(saved_tensors_hooks, FlopCounterMode); {PEAK_RULE}.",
        "",
        "| " + " | ".join(PLAN_COLUMNS) + " |",
        "|" + "---|" * len(PLAN_COLUMNS),
    ]
    lines += ["| " + " | ".join(_plan_cells(p)) + " |" for p in plans]
    return "\n".join(lines) + "\n"


def quiet_libraries() -> None:
    """Keep the libraries' own warnings and progress bars off the terminal (tuneoff says what they would)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
