"""A sentence-pair task built from a shipped corpus, for offline runs of pair models (report 1's setting).

No NLI corpus can be had offline. ``bbc_pairs`` is built from BBC News instead, and says what it is: a
*coherence* task, not entailment. Each pair is two sentences; the label says whether they come from the same
article (``same_article``) or from two different articles of the *same topic* (``other_article``), so the topic
alone gives nothing away: a model has to compare what the two sentences are about. Every article gives one pair of
each label. Articles, not pairs, are split 80/10/10 (by a hash of their id), and a negative partner is drawn from
the same split, so no sentence of a test article is ever seen in training. The construction is fixed (seed 0):
the same pairs on every machine.
"""

from __future__ import annotations

import hashlib
import random
import re

from tuneoff.data.bbc import bbc_files

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
MIN_WORDS = 6


def _articles() -> list[tuple[str, str, list[str]]]:
    """(id, topic, body sentences) per BBC article; the first line is the title and is left out. The corpus repeats
    about a hundred articles: a copy is dropped, so no article can sit on both sides of the split."""

    out, seen = [], set()
    for article_id, topic, text in bbc_files():
        body = " ".join(text.strip().splitlines()[1:])
        key = " ".join(body.lower().split())
        if key in seen:
            continue
        seen.add(key)
        sentences = [" ".join(s.split()) for s in SENTENCE.split(body) if len(s.split()) >= MIN_WORDS]
        if len(sentences) >= 2:
            out.append((article_id, topic, sentences))
    return out


def _split_of(article_id: str) -> str:
    bucket = int(hashlib.sha256(article_id.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def bbc_pairs(cfg) -> dict:
    import pandas as pd

    rng = random.Random(0)
    articles = _articles()
    rows: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    by_split_topic: dict[tuple[str, str], list[int]] = {}
    for i, (aid, topic, _) in enumerate(articles):
        by_split_topic.setdefault((_split_of(aid), topic), []).append(i)
    for i, (aid, topic, sentences) in enumerate(articles):
        split = _split_of(aid)
        first, second = rng.sample(range(len(sentences)), 2)
        rows[split].append({"id": f"{aid}-same", "text": sentences[first], "text_pair": sentences[second],
                            "label": "same_article"})
        others = [j for j in by_split_topic[(split, topic)] if j != i]
        if others:
            other = articles[rng.choice(others)][2]
            rows[split].append({"id": f"{aid}-other", "text": sentences[rng.randrange(len(sentences))],
                                "text_pair": other[rng.randrange(len(other))], "label": "other_article"})
    return {split: pd.DataFrame(r) for split, r in rows.items()}
