"""Sentence-pair tasks built from shipped corpora, for offline runs of pair models (report 1's setting).

No NLI corpus can be had offline. The pair tasks here are built from topic corpora instead, and say what they are:
*coherence* tasks, not entailment. Each pair is two pieces of text; the label says whether they come from the same
document or from two different documents of the *same topic*, so the topic alone gives nothing away: a model has to
compare what the two pieces are about. Every document gives ``per_document`` pairs of each label. Documents, not pairs,
are split, and a negative partner is drawn from the same split, so no piece of a test document is ever seen in
training. The construction is fixed (seed 0): the same pairs on every machine.

- ``bbc_pairs``: two sentences of a BBC News article (title left out); articles split 80/10/10 by a hash of their id;
  one pair of each label per article (about 4,400 pairs, 420 of them test).
- ``reuters_pairs``: two 24-word passages of a Reuters-21578 R52 story (the shipped text has no punctuation, so
  passages, not sentences); the corpus's official test stories are the test split, 10% of the training stories
  (by hash) the validation split; two pairs of each label per story, so the test split has thousands of pairs.
  Pairs of one story share it: the test examples are not all independent (the verdict's intervals treat them as if
  they were; with two pairs per story that makes them somewhat too narrow).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from tuneoff.data.bbc import bbc_files
from tuneoff.data.orange import orange_tab

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
MIN_WORDS = 6
PASSAGE_WORDS = 24


@dataclass(frozen=True)
class Document:
    id: str
    topic: str
    split: str
    pieces: list[str]  # sentences or passages; at least two


def _hash_split(doc_id: str, test: bool = True) -> str:
    bucket = int(hashlib.sha256(doc_id.encode()).hexdigest(), 16) % 10
    if test and bucket == 0:
        return "test"
    return "validation" if bucket == 1 else "train"


def _bbc_documents() -> list[Document]:
    """BBC articles' body sentences; the first line is the title and is left out. The corpus repeats about a hundred
    articles: a copy is dropped, so no article can sit on both sides of the split."""
    out, seen = [], set()
    for article_id, topic, text in bbc_files():
        body = " ".join(text.strip().splitlines()[1:])
        key = " ".join(body.lower().split())
        if key in seen:
            continue
        seen.add(key)
        sentences = [" ".join(s.split()) for s in SENTENCE.split(body) if len(s.split()) >= MIN_WORDS]
        if len(sentences) >= 2:
            out.append(Document(article_id, topic, _hash_split(article_id), sentences))
    return out


def _reuters_documents() -> list[Document]:
    """R52 stories cut into consecutive 24-word passages (a shorter tail is dropped); stories with fewer than two
    passages give no pair. Repeated stories are dropped (the first copy kept, the test file read first, so a story in
    both files stays a test story)."""
    out, seen = [], set()
    for source in ("test", "train"):
        df = orange_tab(f"reuters-r52-{source}.tab")
        for i, (text, topic) in enumerate(zip(df["text"], df["label"])):
            words = text.split()
            key = " ".join(words)
            if key in seen:
                continue
            seen.add(key)
            passages = [
                " ".join(words[k : k + PASSAGE_WORDS]) for k in range(0, len(words) - PASSAGE_WORDS + 1, PASSAGE_WORDS)
            ]
            doc_id = f"r52-{source}-{i}"
            if len(passages) >= 2:
                out.append(
                    Document(doc_id, topic, "test" if source == "test" else _hash_split(doc_id, test=False), passages)
                )
    return out


def build_pairs(documents: list[Document], per_document: int, same: str, other: str) -> dict:
    """``per_document`` pairs of each label per document (fewer where a document has too few pieces for distinct
    positive pairs, or its split holds no other document of its topic)."""
    import pandas as pd

    rng = random.Random(0)
    rows: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    by_split_topic: dict[tuple[str, str], list[int]] = {}
    for i, doc in enumerate(documents):
        by_split_topic.setdefault((doc.split, doc.topic), []).append(i)
    for i, doc in enumerate(documents):
        n = len(doc.pieces)
        positives = min(per_document, n * (n - 1) // 2)
        chosen: set[tuple[int, int]] = set()
        while len(chosen) < positives:
            chosen.add(tuple(rng.sample(range(n), 2)))
        others = [j for j in by_split_topic[(doc.split, doc.topic)] if j != i]
        for k, (first, second) in enumerate(sorted(chosen)):
            suffix = "" if per_document == 1 else f"-{k}"
            rows[doc.split].append(
                {
                    "id": f"{doc.id}-same{suffix}",
                    "text": doc.pieces[first],
                    "text_pair": doc.pieces[second],
                    "label": same,
                }
            )
            if others:
                partner = documents[rng.choice(others)].pieces
                rows[doc.split].append(
                    {
                        "id": f"{doc.id}-other{suffix}",
                        "text": doc.pieces[rng.randrange(n)],
                        "text_pair": partner[rng.randrange(len(partner))],
                        "label": other,
                    }
                )
    return {split: pd.DataFrame(r) for split, r in rows.items()}


def bbc_pairs(cfg) -> dict:
    return build_pairs(_bbc_documents(), 1, "same_article", "other_article")


def reuters_pairs(cfg) -> dict:
    return build_pairs(_reuters_documents(), 2, "same_story", "other_story")
