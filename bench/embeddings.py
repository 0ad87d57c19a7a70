"""Embedding explorer timings: layout first (UMAP, uncached, numba compile included) and cached, selection to grid.

    python bench/embeddings.py [--dataset digits] [--train-sample 2000] [--classes 3]

Trains (or loads) the SPM original and one oracle without the chosen classes (seed + 1; the map shows one),
then measures in one process:
- layout_first_s: the aligned UMAP layout of original / unlearned / oracle, not cached, first UMAP in the
  process (so it includes numba's compilation, as the app's first map does);
- layout_cached_s: what the page does once the layout is stored: load it and build the WebGL figure JSON;
- select_to_grid_s: a 50-point lasso event (Streamlit's dict-shaped customdata) -> sample keys -> table
  rows -> the thumbnail grid's HTML.
The last line is one JSON object with those three keys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from core import charts, workflow  # noqa: E402
from core.data import load_dataset, request_classes  # noqa: E402
from core.eval import embeddings as E  # noqa: E402
from core.selection import selected_keys, selection_rows, thumbnails_html  # noqa: E402
from core.views.maps import map_view  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--train-sample", type=int, default=2000)
    ap.add_argument("--classes", type=int, nargs="+", default=[3])
    a = ap.parse_args()

    ds = load_dataset(a.dataset)
    request = request_classes(ds, a.classes)
    start = time.perf_counter()
    original = workflow.original("spm", ds)
    oracle = workflow.oracle("spm", ds, request, seed_offset=1)
    unlearned = workflow.run_method("spm-delete", original.classifier, ds, request).model
    print(f"models ready in {time.perf_counter() - start:.1f} s ({a.dataset}, forgetting {request.description})")

    rows = E.map_rows(ds, request, a.train_sample)
    start = time.perf_counter()
    emb = E.collect({"original": original.classifier, "unlearned": unlearned, "oracle": oracle.classifier}, ds, rows)
    print(f"embeddings of {rows.n:,} samples x 3 models: {time.perf_counter() - start:.2f} s")
    keys = {"original": original.key, "unlearned": f"{original.key}-forget-{request.key()}", "oracle": oracle.key}

    start = time.perf_counter()
    E.aligned_layout(emb, "pca")
    print(f"PCA layout (shown at once): {time.perf_counter() - start:.3f} s")

    umap_key = E.layout_key("umap", keys, request.key(), rows)
    E.layout_path(umap_key).unlink(missing_ok=True)
    start = time.perf_counter()
    first = E.cached_layout(emb, "umap", keys, request.key())
    layout_first_s = time.perf_counter() - start
    assert not first.cached
    print(f"UMAP layout, first in this process (numba compile included): {layout_first_s:.1f} s")

    start = time.perf_counter()
    cached = E.cached_layout(emb, "umap", keys, request.key())
    figure_json = charts.map_figure(map_view(emb, cached, "label", ds.class_names)).to_json()
    layout_cached_s = time.perf_counter() - start
    assert cached.cached
    print(f"UMAP layout cached: load + figure of {rows.n:,} points x {len(cached.coords)} panels "
          f"({len(figure_json) / 1e6:.1f} MB JSON): {layout_cached_s:.3f} s")

    picked = rows.keys[:: max(1, rows.n // 50)][:50]
    event = {"selection": {"points": [{"curve_number": i % 10, "point_index": i, "customdata": {"0": k}}
                                      for i, k in enumerate(picked)]}}
    start = time.perf_counter()
    selection = selected_keys(event)
    predictions = {m: dict(zip(rows.keys, emb.predictions(m).tolist())) for m in emb.models}
    table = selection_rows(selection, ds.y_train, ds.y_test, ds.class_names, predictions, request.mask(ds.num_train))
    images = [getattr(ds, f"x_{r['split']}")[r["id"]] for r in table]
    html = thumbnails_html(images, [r["key"] for r in table], [r["key"] for r in table], grid="selection")
    select_to_grid_s = time.perf_counter() - start
    print(f"selection of {len(selection)} samples -> grid ({len(html) / 1e3:.0f} kB HTML): {select_to_grid_s:.3f} s")

    print(json.dumps({"layout_first_s": round(layout_first_s, 3), "layout_cached_s": round(layout_cached_s, 3),
                      "select_to_grid_s": round(select_to_grid_s, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
