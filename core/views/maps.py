"""The embedding map as the Embeddings page shows it: colours, panels, facts, a selection and one sample.

``map_view`` turns embeddings and their aligned layout (``core.eval.embeddings``) into the panels that
``core.charts.map_figure`` draws; ``selection_view`` and ``sample_view`` describe the samples a user picked
on it: what each model predicts for them, their nearest training samples and, for SPM, why a prediction
changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import neighbours as NB
from core.eval.embeddings import MODELS, Embeddings, Layout
from core.models.base import Classifier
from core.selection import class_counts, parse_key, selection_rows, train_ids

COLOURINGS = ("label", "prediction", "forgotten", "prediction changed", "shift size")
PANEL_TITLES = {"original": "Original", "unlearned": "After unlearning", "oracle": "Oracle (retrained)"}
SHOWN = ("both", "test", "train")


# ---- what the map is coloured by ------------------------------------------------------------------------
def colour_values(emb: Embeddings, layout: Layout, model: str, colouring: str) -> np.ndarray:
    """Per-row values for one panel: class indices, 0/1 flags, or a continuous shift.

    "prediction changed" compares a model's prediction with the original's (the original panel compares
    the unlearned model's, so it shows which points will change). "shift size" is the 2-D displacement
    from the original's position (the original panel shows the oracle's displacement); when the features
    did not move (SPM deletion) it falls back to the change in predicted probabilities (L1), which is
    what deletion moves.
    """
    if colouring == "label":
        return emb.rows.labels
    if colouring == "prediction":
        return emb.predictions(model)
    if colouring == "forgotten":
        return emb.rows.forgotten.astype(np.int64)
    other = model if model != "original" else next((m for m in ("unlearned", "oracle") if m in emb.probs), model)
    if colouring == "prediction changed":
        return (emb.predictions(other) != emb.predictions("original")).astype(np.int64)
    if colouring == "shift size":
        if model == "original":
            other = "oracle" if "oracle" in layout.coords else other
        moved = layout.shift(other)
        if not moved.any():
            return np.abs(emb.probs[other] - emb.probs["original"]).sum(1).astype(np.float32)
        return moved
    raise ValueError(f"unknown colouring {colouring!r}; known: {', '.join(COLOURINGS)}")


def prototype_positions(emb: Embeddings, layout: Layout, model: str, num_classes: int) -> dict[int, np.ndarray]:
    """Per class, the 2-D centroid of the training rows the model holds (forgotten rows are not held).

    For SPM this is where its prototype (the class mean of the memory) sits on the map; a class with
    no held row has no marker, as a forgotten class has no prototype.
    """
    held = emb.rows.is_train & (~emb.rows.forgotten if model != "original" else True)
    out = {}
    for c in range(num_classes):
        rows = held & (emb.rows.labels == c)
        if rows.any():
            out[c] = layout.coords[model][rows].mean(0)
    return out


def map_summary(emb: Embeddings, layout: Layout) -> dict:
    """Headline numbers: rows, forgotten rows, prediction changes and mean shifts."""
    out = {"rows": emb.rows.n, "forgotten_rows": int(emb.rows.forgotten.sum()), "method": layout.method,
           "layout_s": round(layout.seconds, 3), "cached": layout.cached}
    for m in emb.models:
        if m == "original":
            continue
        out[f"changed_{m}"] = int((emb.predictions(m) != emb.predictions("original")).sum())
        out[f"mean_shift_{m}"] = float(layout.shift(m).mean())
        out[f"same_features_{m}"] = emb.same_features.get(m)
    return out


def map_facts(emb: Embeddings, layout: Layout, layout_note: str, forgetting: bool) -> list[str]:
    """The map's caption, fact by fact: what it shows and what changed."""
    summary, rows = map_summary(emb, layout), emb.rows
    facts = [f"{layout_note}: {rows.n:,} samples ({len(rows.test_ids):,} test, {len(rows.train_ids):,} training, "
             f"{summary['forgotten_rows']:,} forgotten)"]
    if "unlearned" in emb.features:
        facts.append(f"{summary['changed_unlearned']:,} predictions changed after unlearning")
        if emb.same_features.get("unlearned") == "original":
            facts.append("the unlearned encoder is the original's (deletion edits memory only), so its points do not "
                         "move: colour by prediction / prediction changed / shift size to see what does")
    if "oracle" in emb.features:
        facts.append(f"{summary['changed_oracle']:,} differ from the oracle's retraining")
    if not forgetting:
        facts.append("nothing is forgotten yet: select samples and press *Forget the selection*, "
                     "or use the Forget page")
    return facts


# ---- the panels -----------------------------------------------------------------------------------------
@dataclass
class MapPanel:
    model: str
    title: str
    xy: np.ndarray  # (rows, 2) aligned coordinates
    values: np.ndarray  # colour value per row (see colour_values)
    prototypes: dict[int, np.ndarray] = field(default_factory=dict)  # class -> 2-D centre; empty: not shown


@dataclass
class MapView:
    """One map: a panel per model over the same rows, coloured one way."""

    colouring: str
    scheme: str  # "classes", "forgotten", "changed" (discrete) or "continuous"
    legend: list[str]  # the name of each discrete colour value; empty for a continuous colouring
    class_names: list[str]
    keys: np.ndarray  # sample key per row (object array)
    visible: np.ndarray  # bool per row: in the chosen split
    marked: np.ndarray  # bool per row: ringed in every panel (the followed selection)
    point_size: int
    panels: list[MapPanel]


def map_view(emb: Embeddings, layout: Layout, colouring: str, class_names: Sequence[str],
             highlight: Sequence[str] = (), show: str = "both", prototypes: bool = False) -> MapView:
    """The panels of every model that has both features and coordinates. ``highlight``: sample keys to
    ring; ``show``: "test", "train" or "both"; ``prototypes``: mark each class's held centroid."""
    if show not in SHOWN:
        raise ValueError(f"unknown split choice {show!r}; known: {', '.join(SHOWN)}")
    if colouring in ("label", "prediction"):
        scheme, legend = "classes", [str(n) for n in class_names]
    elif colouring == "forgotten":
        scheme, legend = "forgotten", ["kept", "forgotten"]
    elif colouring == "prediction changed":
        scheme, legend = "changed", ["same", "changed"]
    elif colouring == "shift size":
        scheme, legend = "continuous", []
    else:
        raise ValueError(f"unknown colouring {colouring!r}; known: {', '.join(COLOURINGS)}")
    rows = emb.rows
    keys = np.asarray(rows.keys, dtype=object)
    visible = np.ones(rows.n, bool) if show == "both" else (rows.is_train if show == "train" else ~rows.is_train)
    marked = np.isin(keys, np.asarray(list(highlight), dtype=object)) if len(highlight) else np.zeros(rows.n, bool)
    panels = [MapPanel(m, PANEL_TITLES[m], layout.coords[m], colour_values(emb, layout, m, colouring),
                       prototype_positions(emb, layout, m, len(class_names)) if prototypes else {})
              for m in MODELS if m in layout.coords and m in emb.features]
    return MapView(colouring, scheme, legend, [str(n) for n in class_names], keys, visible, marked,
                   4 if rows.n > 5000 else 6, panels)


# ---- what was selected on it ------------------------------------------------------------------------------
@dataclass
class SelectionView:
    keys: list[str]  # the selected samples that are on the map
    table: list[dict]  # one row per sample: label, each model's prediction, forgotten (the CSV)
    counts: list[dict]  # per class: train, test and total samples selected
    train_ids: list[int]  # what "forget the selection" forgets
    images: list[np.ndarray]  # thumbnails of the first ``limit`` samples
    captions: list[str]
    thumbnail_keys: list[str]
    legend: str  # how to read a caption


def selection_view(selection: Sequence[str], emb: Embeddings, dataset: Dataset, request: ForgetRequest | None,
                   limit: int = 60) -> SelectionView:
    on_map = set(emb.rows.keys)
    keys = [k for k in selection if k in on_map]
    names = dataset.class_names
    predictions = {m: dict(zip(emb.rows.keys, emb.predictions(m).tolist())) for m in emb.models}
    forgotten = request.mask(dataset.num_train) if request is not None else None
    table = selection_rows(keys, dataset.y_train, dataset.y_test, names, predictions, forgotten)
    shown = table[:limit]
    captions = [f"{r['key']}{' ✗' if r['forgotten'] else ''} | {r['label_name']} | "
                + " → ".join(names[r[f'pred_{m}']] for m in emb.models) for r in shown]
    more = f" · first {limit} of {len(table):,}" if len(table) > limit else ""
    legend = "Caption: sample | true label | predicted by " + " → ".join(emb.models) + " (✗: forgotten)" + more
    return SelectionView(keys, table, class_counts(keys, dataset.y_train, dataset.y_test, names), train_ids(keys),
                         [getattr(dataset, f"x_{r['split']}")[r["id"]] for r in shown], captions,
                         [r["key"] for r in shown], legend)


@dataclass
class SampleView:
    """One sample: each model's probabilities, its nearest held training samples, and for SPM the why."""

    key: str
    split: str
    id: int
    image: np.ndarray  # CHW in [0, 1]
    label: int
    probs: dict[str, np.ndarray]  # model -> predicted probabilities
    neighbours: dict[str, list[NB.Neighbour]]  # "original" / "unlearned" -> nearest held training samples
    why: dict | None = None  # NB.explain_spm when both models are SPMs
    scores: list[dict] | None = None  # why["class_scores"] with each class's name


def sample_view(key: str, emb: Embeddings, dataset: Dataset, request: ForgetRequest | None, original: Classifier,
                unlearned: Classifier | None, original_index: NB.NeighbourIndex, k: int = 8) -> SampleView:
    """``original_index``: the original's training-feature index; the unlearned model reuses it when its
    encoder is the original's (deletion in a by-design model), else gets its own."""
    split, sample_id = parse_key(key)
    row = emb.rows.keys.index(key)
    indexes = {"original": original_index}
    if unlearned is not None:
        indexes["unlearned"] = NB.index_for(unlearned, dataset, request, base=original_index)
    models = {"original": original, "unlearned": unlearned}
    neighbours = {name: NB.neighbours_of(models[name], dataset, split, sample_id, k, index=index)
                  for name, index in indexes.items()}
    view = SampleView(key, split, sample_id, getattr(dataset, f"x_{split}")[sample_id],
                      int(getattr(dataset, f"y_{split}")[sample_id]), {m: emb.probs[m][row] for m in emb.models},
                      neighbours)
    if unlearned is not None and NB.is_spm(original) and NB.is_spm(unlearned):
        view.why = NB.explain_spm(original, unlearned, original.features_of(dataset, split)[sample_id])
        view.scores = [{"class": r["class"], "name": dataset.class_names[r["class"]],
                        **{c: v for c, v in r.items() if c != "class"}} for r in view.why["class_scores"]]
    return view
