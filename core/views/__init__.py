"""What the pages show, computed: view dataclasses built from models, datasets and requests.

A page asks a function here for a view and only draws it (tables, images, ``core.charts`` figures); the
same views serve anything else that shows results. Nothing here imports Streamlit.
"""

from __future__ import annotations

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
