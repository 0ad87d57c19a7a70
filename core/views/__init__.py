"""What the pages show, computed: view dataclasses built from models, datasets and requests.

A page asks a function here for a view and only draws it (tables, images, ``core.charts`` figures); the
same views serve anything else that shows results. Nothing here imports Streamlit.
"""

from __future__ import annotations

import numbers
import re

from core import bundle
from core.data.dataset import Dataset


def class_label(dataset: Dataset, c: int) -> str:
    """``"3: dress"``: a class as pickers and axes name it."""
    return f"{c}: {dataset.class_names[c]}"


def class_labels(dataset: Dataset) -> list[str]:
    return [class_label(dataset, c) for c in range(dataset.num_classes)]


def recipe_note(dataset: Dataset, kind: str) -> str:
    """The training recipe of ``kind`` on ``dataset`` in one line."""
    tc = bundle.recipe(dataset, kind)
    return f"{tc.optimizer}, {tc.epochs} epochs, batch {tc.batch_size}, lr {tc.lr:g}, seed {tc.seed}"


def duration(seconds: float) -> str:
    """``"45 s"`` under two minutes, else ``"2.5 min"``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


MARKDOWN_SPECIAL = re.compile(r"[\\`*_\[\]<>$~|]")  # what Markdown (and Streamlit's $ for LaTeX) would read as markup


def markdown_table(rows: list[dict], digits: int = 2) -> str:
    """``rows`` (one dict per row, the first row's keys as columns) as a Markdown table: fractional numbers to
    ``digits`` decimals and numbers right-aligned, missing values (None, NaN) empty, markup characters escaped and
    line breaks made spaces, so that a cell shows its text as it is. A page draws it with ``st.markdown``, which needs
    none of the JavaScript an interactive table loads in each browser (about 1.6 MB: bench/classroom.py)."""
    columns = list(rows[0]) if rows else []

    def cell(value) -> str:
        if value is None or value != value:  # NaN is the one value unequal to itself
            return ""
        fractional = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
        text = f"{value:.{digits}f}" if fractional else str(value)
        return " ".join(MARKDOWN_SPECIAL.sub(r"\\\g<0>", text).splitlines())

    def numeric(column) -> bool:  # right-aligned, as a spreadsheet shows numbers
        values = [row.get(column) for row in rows if row.get(column) is not None]
        return bool(values) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)

    rule = "|" + "".join("---:|" if numeric(c) else "---|" for c in columns)
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", rule]
    return "\n".join(lines + ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows])
