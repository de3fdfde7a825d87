"""The verdict card: one screen that answers the study's question, the same in every front end (the terminal at the end
of ``tuneoff run`` / ``tuneoff report``, the top of the HTML report and of ``summary.md``, a study's notebook display,
the exported Markdown). It is computed once per group from the verdict (``verdict.GroupVerdict``) and rendered as the
same lines everywhere; the long explanation, the tables and the plots stay below it.

What a person looks for first: the method to use; whether that is a finding or a default for lack of evidence; what it
costs against the best; the most it may lose against the best (95%); what would change the answer; how it was chosen
(``analysis.prefer``, the constraints); the evidence it rests on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from tuneoff.analysis import sentences


@dataclass
class Card:
    title: str
    recommended: str | None
    status: str  # "decided", "by default", "none"
    reason: str  # why, in one clause
    costs: str = ""  # against the reference, as ratios
    worst_case: str = ""  # the most it may lose against the best, 95% simultaneous
    would_change: str = ""  # the open comparison and its levers
    chosen_by: str = ""  # the rule and the user's preferences
    evidence: str = ""  # runs, seeds, test examples, training time
    extra: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The card as Markdown lines (the terminal drops the bold)."""
        head = (
            f"**Use {self.recommended}**" if self.recommended else "**No recommendation**"
        ) + f" ({self.status}): {self.reason}"
        body = [
            ("Cost", self.costs),
            ("Worst case", self.worst_case),
            ("What would change it", self.would_change),
            ("Chosen by", self.chosen_by),
            ("Evidence", self.evidence),
        ]
        return [head] + [f"{label}: {text}" for label, text in body if text]

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "extra"}


def card(v, settings) -> Card:
    """The card of one group's verdict (``v``: a ``verdict.GroupVerdict`` after ``verdict.decide``)."""
    t = v.table.set_index("condition", drop=False)
    runs = t[t.method != "baseline"]
    metric, unit = v.metric, sentences.unit(v.metric)
    seeds = int(runs.seeds.sum())
    seconds = float((runs.train_seconds.fillna(0) * runs.seeds).sum()) if "train_seconds" in runs else 0.0
    evidence = (
        f"{len(runs)} conditions, {seeds} runs, {len(v.group.ids):,} test examples; "
        f"{seconds / 60:.0f} minutes of training (summed over runs)"
    )
    prefer = (
        "overall cost (trained weights, peak memory, training time)"
        if settings.prefer == "overall"
        else settings.prefer
    )
    limits = sentences.constraint_text(settings.decide)
    chosen = (
        f"the cheapest on {prefer} within the {100 * settings.margin:g}-point margin of the best "
        f"(analysis.margin, analysis.prefer){'' if limits == 'none' else f'; constraints {limits}'}"
    )
    if v.recommended is None:
        return Card(
            v.group.title,
            None,
            "none",
            sentences.strip_bold(v.lines[0]) if v.lines else "",
            chosen_by=chosen,
            evidence=evidence,
        )
    rec, ref = t.loc[v.recommended], t.loc[v.reference] if v.reference in t.index else t.loc[v.recommended]
    if v.decided:
        status = "decided"
        reason = (
            "shown within the margin of the best, whichever it is, and cheaper"
            if v.recommended != v.best
            else "the pick, shown within the margin of the best, and nothing cheaper is"
        )
    else:
        status = "by default"
        reason = (
            "the study could not decide; the pick on "
            + ("held-apart validation" if v.pick_source == "held-apart" else "the final runs' validation")
            if v.recommended == v.best
            else "the study could not decide; the cheapest that scored within the margin of the pick on test"
        )
    low = v.with_best.set_index("condition").best_low.get(v.recommended) if v.with_best is not None else None
    worst = (
        ""
        if low is None or pd.isna(low)
        else f"it may lose up to {abs(100 * low):.1f} {unit} of {sentences.LABELS[metric]} against the best "
        f"({v.level}, simultaneous over the candidates)"
    )
    costs = (
        "it is the reference"
        if rec.condition == ref.condition
        else f"{sentences.ratio(rec.trained_mb, ref.trained_mb)} the trained weights, "
        f"{sentences.ratio(rec.peak_memory_mb, ref.peak_memory_mb)} the peak memory, "
        f"{sentences.ratio(rec.train_seconds, ref.train_seconds)} the training time of {ref.condition}"
    )
    opened = [
        r
        for r in (v.decisions if v.decisions is not None else pd.DataFrame()).itertuples()
        if getattr(r, "against", "") == "pick" and r.call in ("undecided", "budget-limited", "seeds disagree")
    ]
    change = ""
    if v.contenders:  # they come first: while one may be the best, no other comparison decides the study
        names = ", ".join(v.contenders)
        change = f"{names}: not yet shown above the majority class, and may be the best; more seeds would settle it"
        worst += f"; {names} left out" if worst else ""
    elif opened:
        # the recommendation's own open comparison first (deciding it makes the default a finding), else the one
        # closest to being decided
        first = next((r for r in opened if r.condition == v.recommended), None) or max(
            opened, key=lambda r: r.best_low if pd.notna(r.best_low) else -1.0
        )
        names = ", ".join(r.condition for r in opened)
        change = f"open: {names}; for {first.condition}, " + sentences.what_would_decide(
            v, first.condition, v.best, settings.margin
        )
    elif v.decided:
        change = "nothing at this level of evidence"
    return Card(
        v.group.title,
        v.recommended,
        status,
        reason,
        costs,
        worst,
        change,
        chosen,
        evidence,
        {"best": v.best, "reference": v.reference},
    )
