"""Augmentation: deterministic per seed, training split only, labels kept, synonyms are WordNet's of the same POS."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from conftest import tiny_overrides

from tuneoff.config import AugmentConfig, build_config
from tuneoff.core.errors import TuneoffError

augment = pytest.importorskip("tuneoff.data.augment")
try:
    augment.wordnet()
    HAVE_WORDNET = True
except TuneoffError:
    HAVE_WORDNET = False
needs_wordnet = pytest.mark.skipif(not HAVE_WORDNET, reason="no WordNet (apt-get install wordnet-base)")

TEXTS = pd.DataFrame(
    {
        "id": ["a", "b", "c"],
        "text": [
            "The movie was a great triumph. The actors shine. I loved the ending!",
            "Stocks fell sharply today. Investors worried about rates.",
            "Short text",
        ],
        "label": ["pos", "neg", "pos"],
    }
)


def test_sentence_shuffle_only_reorders_sentences():
    cfg = AugmentConfig(copies=1, sentence_shuffle_p=1.0)
    copies, stats = augment.augmented_copies(TEXTS, cfg, epoch=0)
    assert stats == {"epoch": 0, "copies": 3, "texts_changed": 2, "sentences_shuffled": 2, "words_replaced": 0}
    for before, after in zip(TEXTS.text, copies.text):
        assert sorted(before.split()) == sorted(after.split())
    assert copies.text[0] != TEXTS.text[0] and copies.text[2] == "Short text"  # one sentence: nothing to shuffle
    assert list(copies.label) == list(TEXTS.label) and list(copies.id) == ["a~aug0.0", "b~aug0.0", "c~aug0.0"]


@needs_wordnet
def test_synonym_replacement_uses_wordnet_synonyms_of_the_same_pos():
    wn = augment.wordnet()
    cfg = AugmentConfig(copies=3, synonym_fraction=0.5)
    rng = random.Random(0)
    seen = 0
    for text in TEXTS.text:
        for _ in range(5):
            result = augment.augment_text(text, cfg, rng)
            for rep in result.replacements:
                senses = [s for s in wn.synsets(rep.word.lower()) if (s.pos() if s.pos() != "s" else "a") == rep.pos]
                assert rep.synonym.lower() in {l.name().lower() for s in senses for l in s.lemmas()}, rep
                assert rep.synonym.lower() != rep.word.lower()
                assert rep.synonym.lower() != (wn.morphy(rep.word.lower(), rep.pos) or "").lower(), rep  # not its lemma
                # the claimed POS is the word's most frequent sense's
                first = wn.synsets(rep.word.lower())[0].pos()
                assert rep.pos == ("a" if first == "s" else first)
                seen += 1
    assert seen > 5


@needs_wordnet
def test_an_inflected_word_is_never_replaced_by_its_own_base_form():
    assert "react" not in augment.synonyms("reacted")[1] and "respond" in augment.synonyms("reacted")[1]
    assert "market" not in augment.synonyms("markets")[1] and "marketplace" in augment.synonyms("markets")[1]


@needs_wordnet
def test_augmentation_is_deterministic_per_seed_and_epoch():
    cfg = AugmentConfig(copies=2, sentence_shuffle_p=0.5, synonym_fraction=0.3, seed=7)
    a, _ = augment.augmented_copies(TEXTS, cfg, epoch=1)
    b, _ = augment.augmented_copies(TEXTS, cfg, epoch=1)
    c, _ = augment.augmented_copies(TEXTS, cfg, epoch=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_missing_wordnet_is_a_clear_error(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setattr(augment, "_WORDNET", None)
    monkeypatch.setattr(augment, "DEBIAN_WORDNET", tmp_path / "none")
    monkeypatch.setattr(nltk.data, "find", lambda *a, **k: (_ for _ in ()).throw(LookupError("x")))
    with pytest.raises(TuneoffError, match="nltk.downloader wordnet.*apt-get install wordnet-base"):
        augment.wordnet()


def test_copies_without_an_augmentation_is_a_config_error():
    with pytest.raises(TuneoffError, match="no augmentation is on"):
        build_config({}, ["data.augment.copies=1"])


@needs_wordnet
def test_training_with_augmentation_records_it_and_never_touches_eval_data(tiny_bert, toy_csv, tmp_path):
    from tuneoff.training.loop import train

    cfg = build_config(
        {},
        tiny_overrides(
            tiny_bert,
            toy_csv,
            tmp_path,
            **{
                "data.augment.copies": 1,
                "data.augment.synonym_fraction": 0.3,
                "data.augment.sentence_shuffle_p": 0.5,
                "train.epochs": 2,
            },
        ),
    )
    result = train(cfg, progress=False)
    info = json.loads((result.run_dir / "run.json").read_text())
    train_rows = info["sizes"]["train"]
    assert [a["copies"] for a in info["augmentation"]] == [train_rows, train_rows]
    assert result.resources["train_samples"] == 2 * 2 * train_rows  # originals + one copy, two epochs
    preds = pd.read_csv(result.run_dir / "predictions.csv")
    assert not preds.id.str.contains("~aug").any()
    toy = pd.read_csv(toy_csv)
    assert set(preds.text) <= set(toy.text), "test texts are the originals"


def test_importing_tuneoff_leaves_the_umask_alone():
    """Reading the umask sets it; tuneoff.core.files once left it at 0 in any process that did not also import the
    run-directory module, so every file written after was world-writable (and NLTK refused the WordNet copy)."""
    import subprocess
    import sys

    code = "import os; os.umask(0o022); import tuneoff.data.augment; print(oct(os.umask(0o022)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0o22"


@pytest.mark.skipif(not (augment.DEBIAN_WORDNET / "data.noun").is_file(), reason="no Debian wordnet-base")
def test_the_debian_wordnet_copy_is_private_and_nltk_reads_it(tmp_path, monkeypatch):
    """NLTK 3.10 reads no data another account could have written: a copy left group- or world-writable (by the
    umask bug above, or a umask of 0) is made private again, and NLTK finds it."""
    import nltk

    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path))
    root = augment._debian_corpus_root()
    corpus = root / "corpora" / "wordnet"
    tree = [root, root / "corpora", corpus, *corpus.iterdir()]
    for path in tree:
        path.chmod(path.stat().st_mode | 0o022)
    assert augment._debian_corpus_root() == root
    assert not [p.name for p in tree if p.stat().st_mode & 0o022]
    monkeypatch.setattr(nltk.data, "path", [str(root)])
    assert nltk.data.find("corpora/wordnet").path == str(corpus)
