"""What a study can decide, said before it trains: per group of conditions the verdict will compare, the smallest
difference its seeds and test examples resolve, the chance that it decides at its margin, and the seeds or test
examples that would make that chance 80% (``analysis.power``).

The verdict's question is "is this cheaper method within the margin of the best?" (Hsu's MCB over the group's
candidates, one-sided at ``alpha / (k - 1)``). Before any run, two quantities are not known and are taken from what
tuneoff has measured, each said in the plan:

- each condition's seed-to-seed spread: a typical condition's, 0.96 accuracy points (the scale of the prior fitted on
  every condition of the committed studies, ``bench/results/seed-prior-20261207.md``), as the verdict will read it
  after moderating it toward the prior (``power.Noise``): with few seeds the prior's 1.76 points weigh in;
- the per-example variance of a difference between two methods: as measured between methods close to each other in
  the default study (about 80% accurate): 0.04 plus 0.075 over the seeds (``PER_EXAMPLE``).

The number of test examples is read from the data where that needs no download (offline corpora, local files), else
from ``data.max_test_samples`` / ``max_eval_samples``. "Between truly equal methods" is the question a plan can answer
without knowing the answer: the chance that a method exactly as good as the best is shown within the margin.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneoff.analysis import power
from tuneoff.analysis.significance import SEED_PRIOR, TYPICAL_SEED_SD
from tuneoff.config import DataConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.data.builtins import BUILTIN_DATASETS
from tuneoff.study.protocol import conditions
from tuneoff.study.spec import expand

# A difference's per-example variance with S seeds: 0.04 + 0.075 / S, measured between the four methods within four
# points of each other in the default study's re-run (studies/results/default.md: 0.10 to 0.16 on one seed, 0.05 to
# 0.08 averaged over three; the part that seeds average away is the seed x example interaction).
PER_EXAMPLE, PER_EXAMPLE_PER_SEED = 0.04, 0.075


@dataclass
class GroupPlan:
    """What one group of the study can decide at its margin (fractions of the metric; counts)."""

    group: str
    conditions: int
    seeds: int
    examples: int | None  # test examples (None: a hub dataset without a cap, unknown before it downloads)
    available: int | None  # test examples the data has without a cap
    margin: float
    resolvable: float | None  # the margin decided 80% of the time between truly equal methods
    chance: float | None  # the chance of deciding at the study's margin
    seeds_for_80: int | None
    examples_for_80: int | None

    def lines(self) -> list[str]:
        """The plan in words: one line, and a warning when the margin is out of reach."""
        head = f"{self.group}: {self.conditions} conditions x {self.seeds} seeds"
        if self.examples is None:
            return [f"{head}: test size unknown before the download (set data.max_test_samples to plan it)"]
        out = [
            f"{head} on {self.examples:,} test examples resolve about {100 * self.resolvable:.1f} points "
            f"(80% chance); at the {100 * self.margin:g}-point margin a method as good as the best is shown so "
            f"{100 * self.chance:.0f}% of the time"
        ]
        levers = []
        if self.seeds_for_80 and self.seeds_for_80 != self.seeds:
            levers.append(f"{self.seeds_for_80} seeds per condition")
        if self.examples_for_80 and (self.available is None or self.examples_for_80 <= self.available):
            levers.append(f"{self.examples_for_80:,} test examples")
        if self.chance < power.TARGET:
            if levers:
                out.append(f"    for 80%: {' or '.join(levers)}")
            else:
                have = f" (the data has {self.available:,})" if self.available else ""
                out.append(
                    f"    for 80%, neither more seeds (up to {power.MAX_SEEDS}) nor the test examples the data "
                    f"has{have} suffice alone"
                )
        if self.resolvable > 2 * self.margin:
            out.append(
                f"    warning: {self.examples:,} test examples and {self.seeds} seeds resolve about "
                f"{100 * self.resolvable:.0f} points; the margin is {100 * self.margin:g}: widen it "
                "(analysis.margin), add test data or seeds, or expect 'cannot decide'"
            )
        return out


def _test_sizes(cfg: DataConfig, cache: dict) -> tuple[int | None, int | None]:
    """(test examples the runs will use, test examples the data has): read from offline data only."""
    key = cfg.model_dump_json()
    if key not in cache:
        cap = cfg.max_test_samples or cfg.max_eval_samples
        spec = BUILTIN_DATASETS.get(cfg.name)
        if spec is not None and not spec.offline:
            cache[key] = (cap, None)
        else:
            from tuneoff.data.corpus import load_corpus

            try:
                whole = len(
                    load_corpus(
                        cfg.model_copy(
                            update={"max_test_samples": None, "max_eval_samples": None, "max_validation_samples": None}
                        )
                    ).splits["test"]
                )
            except TuneoffError:
                whole = None
            cache[key] = (min(cap, whole) if cap and whole else cap or whole, whole)
    return cache[key]


def plan(spec) -> list[GroupPlan]:
    """One plan per group the verdict will form (dataset, model, training-set size)."""
    groups: dict[tuple, list] = {}
    for cond in conditions(spec, expand(spec)):
        c = cond.runs[0].config
        groups.setdefault((c.data.name, c.model.name, c.data.max_train_samples), []).append(cond)
    prior, cache, out = SEED_PRIOR[spec.analysis.metric], {}, []
    margin, alpha, seeds = spec.analysis.margin, spec.analysis.alpha, len(spec.seeds)
    for (data, model, size), conds in groups.items():
        name = " · ".join([str(data), str(model)] + ([f"{size:,} training examples"] if size else []))
        examples, available = _test_sizes(conds[0].runs[0].config.data, cache)
        k = len(conds)
        level = alpha / max(k - 1, 1)
        typical = TYPICAL_SEED_SD[spec.analysis.metric] ** 2
        noise = power.Noise(PER_EXAMPLE, typical, typical, prior.df, prior.sd, PER_EXAMPLE_PER_SEED)
        if examples is None or k < 2:
            out.append(GroupPlan(name, k, seeds, examples, available, margin, None, None, None, None))
            continue
        out.append(
            GroupPlan(
                name,
                k,
                seeds,
                examples,
                available,
                margin,
                power.resolvable(noise, seeds, examples, level),
                power.chance(noise, seeds, examples, margin, level),
                power.seeds_for(noise, examples, margin, level),
                power.examples_for(noise, seeds, margin, level),
            )
        )
    return out


def plan_lines(spec) -> list[str]:
    """The plan, said: what it assumes, then each group's line."""
    plans = [p for p in plan(spec) if p.conditions > 1]
    if not plans:
        return []
    head = (
        "what it can decide (before training; seeds scatter as a typical condition of the committed studies did, "
        "1 point, read as the verdict moderates it, and two methods disagree per example as close methods did in the default "
        "study):"
    )
    return [head] + [f"  {line}" for p in plans for line in p.lines()]
