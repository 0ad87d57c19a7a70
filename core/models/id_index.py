"""A model's own FAISS index of per-sample vectors, searched by training id.

By-design models keep such an index as (part of) their memory: MUNKEY's key bank, SPM's kNN support.
Forgetting removes entries with ``remove_ids`` from a copy, so a forgotten model holds no vector of the
deleted samples, and ``held_ids`` reads back what the index really contains (for the memory check).
"""

from __future__ import annotations

import numpy as np

METRICS = ("ip", "l2")


def id_index(vectors: np.ndarray, ids: np.ndarray, metric: str = "ip"):
    """An ``IndexIDMap2`` over a flat index holding ``vectors[ids]`` under their ids.

    Entries stay in id order (``remove_ids`` compacts in order), so results never depend on the edit history.
    """
    import faiss

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    flat = faiss.IndexFlatIP(vectors.shape[1]) if metric == "ip" else faiss.IndexFlatL2(vectors.shape[1])
    index = faiss.IndexIDMap2(flat)
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors[ids], dtype=np.float32), ids)
    return index


def index_without(index, ids: np.ndarray):
    """A copy of ``index`` with the entries of ``ids`` removed (``remove_ids``); ``index`` is unchanged."""
    import faiss

    copy = faiss.clone_index(index)
    removed = copy.remove_ids(np.asarray(ids, dtype=np.int64))
    if removed != len(ids):
        raise RuntimeError(f"the index held {removed} of the {len(ids)} entries to delete")
    return copy


def held_ids(index) -> np.ndarray:
    """The training ids whose vectors ``index`` holds, sorted."""
    import faiss

    return np.sort(faiss.vector_to_array(index.id_map).astype(np.int64))
