"""What MUNKEY retrieved for one test image, as the Retrieval page shows it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from core.data.dataset import Dataset


@dataclass
class RetrievalPanel:
    prediction: str  # the predicted class's name
    confidence: float
    ids: list[int]  # the retrieved training ids, in retrieval order
    images: list[np.ndarray]
    captions: list[str]  # class, aggregation weight, cosine similarity, what its pass predicts, forgotten


def retrieval_panel(explained: dict, dataset: Dataset, forgotten: Collection[int] = ()) -> RetrievalPanel:
    """One image's ``MunkeyClassifier.explain`` output as thumbnails; ``forgotten`` ids are flagged."""
    names = dataset.class_names
    proba = explained["proba"][0]
    passes = explained.get("pass_proba")
    ids, images, captions = [], [], []
    for j, (i, w, s) in enumerate(zip(explained["ids"][0], explained["weights"][0], explained["similarity"][0])):
        if i < 0:
            continue
        text = f"#{i} {names[dataset.y_train[i]]} | weight {w:.2f} | cos {s:.2f}"
        if passes is not None:
            text += f" | pass says {names[int(passes[0, j].argmax())]}"
        if int(i) in forgotten:
            text += " | FORGOTTEN"
        ids.append(int(i))
        images.append(dataset.x_train[i])
        captions.append(text)
    return RetrievalPanel(names[int(proba.argmax())], float(proba.max()), ids, images, captions)


def no_longer_retrieved(before: dict, after: dict) -> list[int]:
    """Ids the image retrieved before deletion and no longer does."""
    return sorted(set(before["ids"][0].tolist()) - set(after["ids"][0].tolist()))


def touched_summary(touched: dict, request_key: str) -> dict:
    """How many test images retrieved a forgotten sample and how many of them changed their prediction."""
    return {"request": request_key, **{k: len(v) for k, v in touched.items()}}
