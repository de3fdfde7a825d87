"""What a study will cost in time, said before it runs (``tuneoff run --dry-run``, ``tuneoff plan``), and the model
the running ETA starts from.

The model is measured, not guessed: each condition is **probed** here, trained by the real loop for ``PROBE_STEPS``
optimizer steps on its real data with the threads a run of the study gets (its feature cache, dynamic padding and
precision included), in a temporary directory. From the probe's ``resources.json``:

- ``load``: the model, data and method set-up of one run; ``cache``: building the frozen layers' feature cache. The
  cache is keyed by content and shared by every run that needs it, so the probe's build is the study's: its runs
  replay it (the dry run pays it once, and says so);
- ``step``: one optimizer step in the steady state: the training time of the probe's second half (from its evaluation
  at step 8 to its last, at 16; the history's ``seconds`` leave evaluations out) over its steps. The first steps are
  not counted: they pay one-time costs (the kernels and allocations of each new batch shape). Counted in (the first
  version: 8 steps, all counted), a LoRA or full step on the default study came out at about twice the second half's
  pace (``bench/results/study-time-default-20261208.md`` against ``study-time-default-again-20261208.md``); on
  report 4 (64 tokens, more distinct lengths) the second half is still warming up, and its predictions run high
  (``study-time-report4_rank_sweep-again-20261208.md``);
- ``evaluation``: one pass over the validation split;
- ``finish``: saving, the latency probe and the test evaluation.

A run then takes ``load + steps x step + evaluations x evaluation + finish``. Its steps are at most the cap (epochs x
steps per epoch, or ``train.max_steps``); with early stopping a run ends at its plateau first: the committed studies'
final runs used 0.13 to 1.0 of their cap, 0.65 at the median (``PLATEAU_SHARE``, from ``studies/results/*.csv``: the
samples each condition trained over its epochs' worth), so the estimate is the median share and the bound the cap.
Runs packed at once share the machine's memory bandwidth; the probe runs alone, so packed runs may take longer.
``bench/study_time.py`` compares the prediction with the measured wall time of studies re-run this round.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuneoff.core.files import read_json

PROBE_STEPS = 16
PROBE_EVERY = 4  # evaluations at steps 4, 8, 12 and 16: the pace of the second half is the steady one
# The median share of its cap a final run trained before its plateau stopped it, over the committed studies' conditions
# with early stopping (studies/results/*.csv: train_seconds x train_samples_per_s / (epochs x train_examples)).
PLATEAU_SHARE = 0.65


@dataclass
class Probe:
    """One condition's costs measured here, in seconds (``steps_per_epoch``: optimizer steps in one epoch)."""

    condition: str
    method: str
    threads: int
    load: float
    cache: float
    step: float
    evaluation: float
    finish: float
    steps_per_epoch: int

    def run_seconds(self, train, share: float) -> float:
        """One run of this condition, training ``share`` of its cap (1.0: the bound)."""
        cap = train.max_steps or train.epochs * self.steps_per_epoch
        steps = cap if not train.patience else max(1, math.ceil(share * cap))
        evaluations = (steps // train.eval_every if train.eval_every else 0) + math.ceil(steps / self.steps_per_epoch)
        return self.load + steps * self.step + evaluations * self.evaluation + self.finish


def probe(condition: str, cfg, threads: int) -> Probe:
    """Train ``cfg`` for ``PROBE_STEPS`` steps with ``threads`` threads in a temporary directory and read its costs."""
    import torch

    from tuneoff.training.retry import train_with_oom_retry

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="tuneoff-probe-") as tmp:
            train = cfg.train.model_copy(
                update={"max_steps": PROBE_STEPS, "eval_every": PROBE_EVERY, "patience": None, "report_to": []}
            )
            probe_cfg = cfg.model_copy(update={"train": train, "output_dir": tmp})
            result = train_with_oom_retry(probe_cfg, progress=False)
            resources = result.resources
            info = read_json(Path(result.run_dir) / "run.json")
            history = (Path(result.run_dir) / "history.jsonl").read_text().splitlines()
    finally:
        torch.set_num_threads(before)
    seconds = resources.get("seconds") or {}
    steps = max(1, resources.get("optimizer_steps") or PROBE_STEPS)
    evaluations = max(1, sum('"val_loss"' in line for line in history))
    marks = [json.loads(line) for line in history if '"val_loss"' in line]
    marks = [m for m in marks if m["step"] >= marks[-1]["step"] / 2] if marks else []  # the second half
    if len(marks) >= 2 and marks[-1]["step"] > marks[0]["step"]:
        step = (marks[-1]["seconds"] - marks[0]["seconds"]) / (marks[-1]["step"] - marks[0]["step"])
    else:  # too few steps to leave the first ones out
        step = max(0.0, float(seconds.get("train", 0.0)) - float(seconds.get("evaluations", 0.0))) / steps
    train_examples = sum((info.get("label_counts") or {}).get("train", {}).values()) or steps
    per_step = resources.get("effective_batch_size") or cfg.train.batch_size * cfg.train.grad_accum
    return Probe(
        condition=condition,
        method=cfg.method.name,
        threads=threads,
        load=float(seconds.get("load", 0.0)),
        cache=float(seconds.get("feature_cache", 0.0)),
        step=max(0.0, step),
        evaluation=float(seconds.get("evaluations", 0.0)) / evaluations,
        finish=sum(float(seconds.get(k, 0.0)) for k in ("save", "latency", "test_evaluation", "final_validation")),
        steps_per_epoch=max(1, math.ceil(train_examples / per_step)),
    )


@dataclass
class PhaseTime:
    phase: str
    runs: int
    minutes: float  # the estimate: runs stop at the median plateau share
    at_most: float  # every run to its cap


def study_time(conds, probes: dict[str, Probe], slots: int) -> list[PhaseTime]:
    """Each phase's wall time with ``slots`` runs at once: the runs' seconds summed and spread over the slots (the
    feature caches are built by then: the probe built them)."""
    phases = []
    for phase, runs_of in (("tuning", lambda c: c.trials), ("final", lambda c: c.runs)):
        runs, likely, bound = 0, 0.0, 0.0
        for cond in conds:
            p = probes[cond.key]
            for run in runs_of(cond):
                runs += 1
                likely += p.run_seconds(run.config.train, PLATEAU_SHARE)
                bound += p.run_seconds(run.config.train, 1.0)
        if runs:
            phases.append(PhaseTime(phase, runs, likely / max(1, slots) / 60, bound / max(1, slots) / 60))
    return phases


def _minutes(m: float) -> str:
    return f"{m:.0f} min" if m >= 10 else f"{m:.1f} min" if m >= 1 else f"{60 * m:.0f} s"


def time_lines(conds, probes: dict[str, Probe], slots: int, threads: int) -> list[str]:
    """The prediction, said: how it was measured, each phase, then each condition's pace."""
    phases = study_time(conds, probes, slots)
    total = sum(p.minutes for p in phases), sum(p.at_most for p in phases)
    out = [
        f"time on this machine (each condition probed for {PROBE_STEPS} steps here; {slots} run(s) at once, "
        f"{threads} thread(s) each; runs stop at their plateau after about {PLATEAU_SHARE:.0%} of their cap as in "
        f"the committed studies): about {_minutes(total[0])}, at most {_minutes(total[1])}"
    ]
    for p in phases:
        out.append(f"  {p.phase}: {p.runs} runs, about {_minutes(p.minutes)} (at most {_minutes(p.at_most)})")
    for cond in conds:
        p = probes[cond.key]
        run = (cond.runs or cond.trials)[0].config.train
        out.append(
            f"  {cond.key}: {p.step:.2g} s a step, {p.evaluation:.2g} s an evaluation; a run about "
            f"{_minutes(p.run_seconds(run, PLATEAU_SHARE) / 60)}"
            + (f" (its feature cache built now, {p.cache:.0f} s, and replayed by every run)" if p.cache >= 1 else "")
        )
    return out


def predict_lines(spec, parallel: int | str = "auto", threads: int | None = None, say=print) -> list[str]:
    """Probe each condition of ``spec`` (``say`` tells which, as it goes) and predict its time with the local
    executor's packing (``--parallel`` / ``--threads`` as the study would get them)."""
    from tuneoff.study.packing import choose
    from tuneoff.study.protocol import conditions
    from tuneoff.study.spec import expand

    conds = conditions(spec, expand(spec))
    slots, per_run = choose(parallel, threads, sum(len(c.trials) + len(c.runs) for c in conds))
    probes = {}
    for i, cond in enumerate(conds, 1):
        say(
            f"probing {cond.key} ({i}/{len(conds)}): {PROBE_STEPS} training steps, "
            f"{PROBE_STEPS // PROBE_EVERY} evaluations, {per_run} thread(s)"
        )
        probes[cond.key] = probe(cond.key, (cond.trials or cond.runs)[0].config, per_run)
    return time_lines(conds, probes, slots, per_run)
