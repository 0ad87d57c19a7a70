"""Chart selections as samples: pure functions from a Plotly selection event to sample keys, counts and CSV.

A point on the embedding map is a *sample key*: ``"train:123"`` (row 123 of ``x_train``, which is also
its forget-request id) or ``"test:45"``. Keys travel with the points as Plotly ``customdata``, because
Streamlit's selection event reports ``point_index`` per trace (so it breaks as soon as colour splits the
points into several traces) and reports ``customdata`` as a dict keyed by position (``{'0': key}``) rather
than a list. Everything here accepts every form seen in practice and never imports Streamlit.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

SPLITS = ("train", "test")


class SelectionError(ValueError):
    """A sample key or selection does not make sense; the message says why."""


def make_key(split: str, sample_id: int) -> str:
    if split not in SPLITS:
        raise SelectionError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return f"{split}:{int(sample_id)}"


def make_keys(split: str, ids: Iterable[int]) -> list[str]:
    return [make_key(split, i) for i in ids]


def parse_key(key: str) -> tuple[str, int]:
    """``"train:12"`` -> ``("train", 12)``; anything else raises SelectionError."""
    if not isinstance(key, str) or ":" not in key:
        raise SelectionError(f"not a sample key: {key!r} (expected 'train:<id>' or 'test:<id>')")
    split, _, number = key.partition(":")
    if split not in SPLITS or not number.strip().lstrip("-").isdigit():
        raise SelectionError(f"not a sample key: {key!r} (expected 'train:<id>' or 'test:<id>')")
    value = int(number)
    if value < 0:
        raise SelectionError(f"sample ids are non-negative: {key!r}")
    return split, value


def _points_of(event) -> list:
    """The list of point dicts from a Streamlit event, its ``selection`` part, or a plain list."""
    if event is None:
        return []
    if isinstance(event, Sequence) and not isinstance(event, str | bytes):
        return list(event)
    if isinstance(event, Mapping):
        if "selection" in event:
            return _points_of(event["selection"])
        points = event.get("points")
        return list(points) if points else []
    selection = getattr(event, "selection", None)  # attribute-style access on other state objects
    if selection is not None:
        return _points_of(selection)
    points = getattr(event, "points", None)
    return list(points) if points else []


def _customdata_values(custom) -> list:
    """customdata in any of its shapes -> list of values (dict keyed by position, list, tuple or scalar)."""
    if custom is None:
        return []
    if isinstance(custom, Mapping):
        def order(k):
            text = str(k)
            return (0, int(text)) if text.isdigit() else (1, text)
        return [custom[k] for k in sorted(custom, key=order)]
    if isinstance(custom, list | tuple | np.ndarray):
        return list(custom)
    return [custom]


def point_key(point: Mapping, trace_keys: Sequence[Sequence[str]] | None = None, column: int = 0) -> str | None:
    """The sample key of one selected point, or None when it carries none (e.g. a prototype marker).

    ``customdata[column]`` is used when present. Otherwise ``trace_keys[curve_number][point_index]``: the
    keys of each trace in drawing order, a fallback for charts drawn without customdata.
    """
    values = _customdata_values(point.get("customdata"))
    if len(values) > column and values[column] is not None:
        value = values[column]
        if isinstance(value, str) and ":" in value:
            parse_key(value)
            return value
        return None
    if trace_keys is not None:
        curve = point.get("curve_number", point.get("curveNumber"))
        index = point.get("point_index", point.get("point_number", point.get("pointIndex")))
        if curve is not None and index is not None and 0 <= curve < len(trace_keys):
            keys = trace_keys[curve]
            if 0 <= index < len(keys):
                return keys[index]
    return None


def selected_keys(event, trace_keys: Sequence[Sequence[str]] | None = None, column: int = 0) -> list[str]:
    """Unique sample keys of the selected points, in selection order.

    The same sample selected in several panels (original / unlearned / oracle) counts once.
    """
    seen: dict[str, None] = {}
    for point in _points_of(event):
        if not isinstance(point, Mapping):
            continue
        key = point_key(point, trace_keys, column)
        if key is not None:
            seen.setdefault(key, None)
    return list(seen)


def split_keys(keys: Iterable[str]) -> dict[str, np.ndarray]:
    """Keys -> sorted unique int64 ids per split: ``{"train": [...], "test": [...]}``."""
    out: dict[str, set[int]] = {s: set() for s in SPLITS}
    for key in keys:
        split, value = parse_key(key)
        out[split].add(value)
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in out.items()}


def train_ids(keys: Iterable[str]) -> list[int]:
    """The training ids among ``keys`` (the only ones a forget request can name)."""
    return split_keys(keys)["train"].tolist()


def labels_of(keys: Sequence[str], y_train: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """The true label of each key, in order."""
    labels = {"train": y_train, "test": y_test}
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        split, value = parse_key(key)
        if value >= len(labels[split]):
            raise SelectionError(f"{key} is out of range: the {split} split has {len(labels[split])} samples")
        out[i] = labels[split][value]
    return out


def class_counts(keys: Sequence[str], y_train: np.ndarray, y_test: np.ndarray,
                 class_names: Sequence[str]) -> list[dict]:
    """Rows ``{class, name, train, test, total}`` for every class that has a selected sample."""
    rows = []
    parts = split_keys(keys)
    train = np.bincount(y_train[parts["train"]], minlength=len(class_names)) if len(parts["train"]) else None
    test = np.bincount(y_test[parts["test"]], minlength=len(class_names)) if len(parts["test"]) else None
    for c, name in enumerate(class_names):
        n_train = int(train[c]) if train is not None else 0
        n_test = int(test[c]) if test is not None else 0
        if n_train or n_test:
            rows.append({"class": c, "name": str(name), "train": n_train, "test": n_test, "total": n_train + n_test})
    return rows


def selection_rows(keys: Sequence[str], y_train: np.ndarray, y_test: np.ndarray, class_names: Sequence[str],
                   predictions: Mapping[str, Mapping[str, int]] | None = None,
                   forgotten: np.ndarray | None = None) -> list[dict]:
    """One row per selected sample: key, split, id, label, the models' predicted classes, forgotten or not.

    ``predictions[model][key]`` is the class a model predicts for a sample (e.g. built from the map's rows);
    a key a model has no prediction for gets an empty cell. ``forgotten`` is a boolean mask over the
    training set.
    """
    rows = []
    labels = labels_of(keys, y_train, y_test)
    for key, label in zip(keys, labels):
        split, value = parse_key(key)
        row = {"key": key, "split": split, "id": value, "label": int(label), "label_name": str(class_names[label])}
        for model, per_key in (predictions or {}).items():
            pred = per_key.get(key)
            row[f"pred_{model}"] = None if pred is None else int(pred)
        row["forgotten"] = bool(split == "train" and forgotten is not None and forgotten[value])
        rows.append(row)
    return rows


def to_csv(rows: Sequence[Mapping]) -> str:
    """Rows as CSV text (header from the first row's keys); an empty selection gives a header-only file."""
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else ["key", "split", "id", "label", "label_name", "forgotten"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


def thumbnail_png(image: np.ndarray) -> bytes:
    """A CHW float image in [0, 1] as PNG bytes at its own size (the page enlarges it without smoothing)."""
    from PIL import Image

    arr = (np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnails_html(images: Sequence[np.ndarray], captions: Sequence[str], keys: Sequence[str],
                    size: int = 72, marked: Iterable[str] = (), grid: str = "") -> str:
    """An HTML grid of thumbnails; each figure carries ``data-key`` so a browser test can read it back.

    Keys in ``marked`` get a red border (e.g. supporters that deletion removed); ``grid`` names the grid
    (``data-grid``) so several on one page can be told apart.
    """
    marked = set(marked)
    cells = []
    for image, caption, key in zip(images, captions, keys):
        data = base64.b64encode(thumbnail_png(image)).decode()
        border = "2px solid #d62728" if key in marked else "1px solid #ddd"
        cells.append(
            f'<figure class="ue-thumb" data-key="{html.escape(key)}" style="margin:0;width:{size + 8}px;'
            f'text-align:center;font-size:11px;line-height:1.2">'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(key)}" width="{size}" height="{size}" '
            f'style="image-rendering:pixelated;border:{border}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return (f'<div class="ue-grid" data-grid="{html.escape(grid)}" style="display:flex;flex-wrap:wrap;gap:6px">'
            + "".join(cells) + "</div>")
