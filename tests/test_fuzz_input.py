"""Property-based: any generated CSV/JSONL file either loads correctly or fails with tuneoff's clean error."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tuneoff.config import DataConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.data.corpus import load_corpus

ODD_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40) | st.sampled_from(
    ["", " ", "\x00", '"', '""', "a,b", "line\nbreak", "\u202e\u200b", "😀" * 3, "x" * 5000, "NA", "null", "1.0"]
)
LABEL = st.one_of(
    st.integers(-2, 3),
    st.floats(allow_nan=True, allow_infinity=False, width=16),
    st.sampled_from(["pos", "neg", "", "1"]),
    st.none(),
    st.booleans(),
)


def check(path, **kw):
    try:
        corpus = load_corpus(DataConfig(name=str(path), **kw))
    except TuneoffError as exc:
        assert str(exc).strip()
        return None
    # Loaded: every split is clean text with known labels.
    for split, df in corpus.splits.items():
        assert df["text"].map(lambda t: isinstance(t, str) and t.strip() != "").all(), split
        assert set(df["label"]) <= set(corpus.label_names)
    assert len(corpus.label_names) >= 2
    return corpus


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes_as_csv_and_jsonl(tmp_path, data):
    for suffix in (".csv", ".jsonl"):
        path = tmp_path / f"f{suffix}"
        path.write_bytes(data)
        check(path)


@FUZZ
@given(rows=st.lists(st.lists(ODD_TEXT, min_size=0, max_size=4), min_size=0, max_size=25), header=st.booleans())
def test_ragged_quoted_csv(tmp_path, rows, header):
    lines = (["text,label"] if header else []) + [
        ",".join('"' + c.replace('"', '""') + '"' if i % 2 else c for i, c in enumerate(r)) for r in rows
    ]
    path = tmp_path / "f.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    check(path)


@FUZZ
@given(
    rows=st.lists(
        st.fixed_dictionaries({"text": ODD_TEXT | st.none() | st.integers(), "label": LABEL}), min_size=0, max_size=30
    )
)
def test_jsonl_mixed_types(tmp_path, rows):
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    check(path)


@FUZZ
@given(
    n=st.integers(4, 40),
    texts=st.lists(st.text(string.ascii_letters + " ", min_size=1, max_size=30), min_size=40, max_size=40),
)
def test_clean_files_always_load(tmp_path, n, texts):
    # Distinct texts: copies of one text stay on one side of a split, so a file of one repeated text has no
    # evaluation rows left (a clear error, tested in test_hardening), and is not "clean".
    rows = [{"text": f"{texts[i]} x{i}".strip(), "label": ["a", "b"][i % 2]} for i in range(n)]
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    corpus = check(path)
    assert corpus is not None and len({i for df in corpus.splits.values() for i in df["id"]}) == n


@pytest.mark.parametrize("content", [b"\xff\xfe\x00bad", b'text,label\n"unclosed,1\n', b"text,label\n\x00,1\n"])
def test_cli_exits_2_without_traceback_on_bad_files(tmp_path, content):
    from tuneoff.cli.app import app

    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["train", "--data", str(path), f"output_dir={tmp_path / 'out'}", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


@FUZZ
@given(
    header=st.lists(st.sampled_from(["text", "label", "id", "x"]), min_size=2, max_size=5),
    values=st.lists(
        st.one_of(ODD_TEXT, st.integers(), st.lists(st.integers(), max_size=2), st.none()), min_size=8, max_size=20
    ),
    labels=st.lists(st.sampled_from(["pos", "pos ", " neg", "neg", "NEG"]), min_size=8, max_size=20),
)
def test_repeated_columns_non_text_cells_and_spaced_labels(tmp_path, header, values, labels):
    """The round-3 input classes: a header that repeats a name, JSON text fields that are numbers or lists, labels that
    differ only by surrounding whitespace. Each file loads clean (spaced labels merged and noted) or fails with
    tuneoff's error naming the problem; nothing else escapes."""
    csv_path = tmp_path / "f.csv"
    csv_path.write_text(",".join(header) + "\n" + "\n".join(f"t{i},{labels[i % len(labels)]},{i},y" for i in range(8)))
    corpus = check(csv_path)
    if len(set(header)) < len(header):
        assert corpus is None
    json_path = tmp_path / "f.jsonl"
    json_path.write_text(
        "\n".join(json.dumps({"text": v, "label": labels[i % len(labels)]}) for i, v in enumerate(values))
    )
    corpus = check(json_path)
    if corpus is not None:
        assert all(isinstance(v, str) for v in values if v is not None), "a non-text cell never trains"
        if any(lab != lab.strip() for lab in labels[: len(values)]):
            assert any("surrounding whitespace removed" in note for note in corpus.notes)
