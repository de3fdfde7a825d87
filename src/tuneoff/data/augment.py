"""Training-set augmentation from the background reports: sentence shuffling and WordNet synonym replacement.

Applied on the fly, per epoch, to extra *copies* of the training examples (the originals are always kept);
never to validation or test data. Seeded by (augment.seed, epoch), so a run is reproducible.

- Sentence shuffling (the AG News report): with probability ``sentence_shuffle_p`` a copy's sentences are put
  in a random order. Sentences are split by NLTK's Punkt tokenizer.
- Synonym replacement (the RoBERTa report; "EDA", Wei & Zou, 2019): up to ``synonym_fraction`` of a copy's
  content words (at most ``synonym_max``) are replaced by a WordNet synonym *of the same part of speech*: the
  word's part of speech is that of its most frequent WordNet sense, and the synonym is a lemma of a synset of
  that part of speech. Stop words (scikit-learn's English list) are never replaced.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tuneoff.core.errors import TuneoffError
from tuneoff.models.assets import cache_dir

DEBIAN_WORDNET = Path("/usr/share/wordnet")
# WordNet's lexicographer file index (lexnames(5WN)): number, name, syntactic category (1 noun, 2 verb, 3 adj,
# 4 adv). NLTK's reader needs this file; Debian's wordnet-base ships the database without it.
LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
WORDNET_HELP = (
    "WordNet is needed for synonym replacement. Get it one of these ways: `python -m nltk.downloader wordnet` "
    "(the usual NLTK way), or on Debian/Ubuntu `apt-get install wordnet-base` (tuneoff then reads /usr/share/wordnet)."
)


def _debian_corpus_root() -> Path:
    """A corpus dir NLTK accepts: Debian's files copied (NLTK's path check refuses symlinks out of its root) plus
    the lexnames index. About 30 MB, copied once."""

    root = cache_dir() / "nltk_data"
    corpus = root / "corpora" / "wordnet"
    corpus.mkdir(parents=True, exist_ok=True)
    for src in DEBIAN_WORDNET.iterdir():
        if src.is_file() and not (corpus / src.name).exists():
            tmp = corpus / f".{src.name}.tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, corpus / src.name)
    lexnames = corpus / "lexnames"
    if not lexnames.exists():
        lexnames.write_text(
            "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))
        )
    # NLTK (3.10 on) reads no data that another account could have written: whatever the umask was (a copy made
    # world-writable by an older tuneoff included), the copy is writable by its owner only.
    for path in (root, root / "corpora", corpus):
        path.chmod(path.stat().st_mode & ~0o022)
    for path in corpus.iterdir():
        path.chmod(path.stat().st_mode & ~0o022)
    return root


_WORDNET = None


def wordnet():
    """NLTK's WordNet reader: NLTK's own data if present, else Debian's wordnet-base; otherwise a clear error."""
    global _WORDNET
    if _WORDNET is not None:
        return _WORDNET
    try:
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError as exc:
        raise TuneoffError("Synonym replacement needs NLTK: pip install nltk. " + WORDNET_HELP) from exc
    try:
        path = nltk.data.find("corpora/wordnet")
    except LookupError:
        if not (DEBIAN_WORDNET / "data.noun").is_file():
            raise TuneoffError(WORDNET_HELP) from None
        root = str(_debian_corpus_root())
        if root not in nltk.data.path:  # NLTK >= 3.9 reads corpora only from paths on nltk.data.path
            nltk.data.path.append(root)
        path = nltk.data.find("corpora/wordnet")

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            # The mapping to other WordNet versions serves the multilingual OMW data and needs index.sense,
            # which Debian's wordnet-base lacks; English synonyms need none of it.
            return None

    with warnings.catch_warnings():  # "multilingual functions are not available": we use English only
        warnings.simplefilter("ignore", UserWarning)
        _WORDNET = EnglishWordNet(path, None)
    return _WORDNET


WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


@dataclass
class Replacement:
    word: str
    synonym: str
    pos: str


@dataclass
class Augmented:
    text: str
    shuffled: bool = False
    replacements: list[Replacement] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.shuffled or bool(self.replacements)


def shuffle_sentences(text: str, rng: random.Random) -> tuple[str, bool]:
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    sentences = PunktSentenceTokenizer().tokenize(text)
    if len(sentences) < 2:
        return text, False
    order = list(range(len(sentences)))
    while order == sorted(order):
        rng.shuffle(order)
    return " ".join(sentences[i] for i in order), True


def synonyms(word: str) -> tuple[str, list[str]]:
    """(part of speech, sorted single-word synonyms of that part of speech) of a word, from WordNet."""
    wn = wordnet()
    senses = wn.synsets(word.lower())
    if not senses:
        return "", []
    pos = "a" if senses[0].pos() == "s" else senses[0].pos()  # satellite adjectives are adjectives
    same = [s for s in senses if (("a" if s.pos() == "s" else s.pos()) == pos)]
    lemmas = {l.name() for s in same for l in s.lemmas() if "_" not in l.name() and l.name().isalpha()}
    # The word's own base form ("reacted" -> "react") is not a synonym: replacing with it changes nothing but the
    # inflection. Synonyms are WordNet lemmas, uninflected, as in EDA (Wei & Zou, 2019).
    own = {word.lower(), (wn.morphy(word.lower(), pos) or word).lower()}
    return pos, sorted(l for l in lemmas if l.lower() not in own)


def replace_synonyms(text: str, fraction: float, cap: int | None, rng: random.Random) -> tuple[str, list[Replacement]]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    spans = [m for m in WORD.finditer(text) if m.group().lower() not in ENGLISH_STOP_WORDS and len(m.group()) > 2]
    candidates = [(m, *synonyms(m.group())) for m in spans]
    candidates = [c for c in candidates if c[2]]
    if not candidates:
        return text, []
    n = max(1, round(fraction * len(spans)))
    n = min(n, cap or n, len(candidates))
    chosen = sorted(rng.sample(candidates, n), key=lambda c: c[0].start())
    out, last, done = [], 0, []
    for match, pos, options in chosen:
        synonym = rng.choice(options)
        if match.group()[0].isupper():
            synonym = synonym[0].upper() + synonym[1:]
        out += [text[last : match.start()], synonym]
        last = match.end()
        done.append(Replacement(match.group(), synonym, pos))
    return "".join(out + [text[last:]]), done


def augment_text(text: str, cfg, rng: random.Random) -> Augmented:
    result = Augmented(text)
    if cfg.sentence_shuffle_p and rng.random() < cfg.sentence_shuffle_p:
        result.text, result.shuffled = shuffle_sentences(result.text, rng)
    if cfg.synonym_fraction:
        result.text, result.replacements = replace_synonyms(result.text, cfg.synonym_fraction, cfg.synonym_max, rng)
    return result


def augmented_copies(train: pd.DataFrame, cfg, epoch: int) -> tuple[pd.DataFrame, dict]:
    """``cfg.copies`` augmented copies of every training example for this epoch, and what changed."""
    rng = random.Random(f"{cfg.seed}-{epoch}")
    rows, shuffled, replaced, changed = [], 0, 0, 0
    for copy in range(cfg.copies):
        for row in train.itertuples(index=False):
            aug = augment_text(row.text, cfg, rng)
            new = row._asdict()
            new["id"] = f"{row.id}~aug{epoch}.{copy}"
            new["text"] = aug.text
            rows.append(new)
            shuffled += aug.shuffled
            replaced += len(aug.replacements)
            changed += aug.changed
    stats = {
        "epoch": epoch,
        "copies": len(rows),
        "texts_changed": changed,
        "sentences_shuffled": shuffled,
        "words_replaced": replaced,
    }
    return pd.DataFrame(rows, columns=train.columns), stats
