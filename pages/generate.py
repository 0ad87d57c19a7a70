"""Generate: what the generation SPM draws for a class before forgetting it, after, and from the oracle.

Zheng et al., "Designing to Forget" (CVPR 2026, arXiv 2603.22870): the generation SPM draws a class from the
support images of that class its UNet reads. Forgetting class q fills q's support with another class's images
relabelled q, as the authors' evaluation does; no weight changes. The oracle, the same recipe retrained without q,
is sampled for q the same way. Image i of each grid starts from the same noise (the noise seed).
"""

import threading

import numpy as np
import streamlit as st

from core import bundle, workflow
from core.data import Dataset, request_classes
from core.eval import generation as G
from core.views import class_label
from pages.common import oracle_job, ready_model
from pages.sidebar import page_dataset
from pages.widgets import image_grid_ui, job_status_ui, poll_while_active, training_refused_ui, untrained_model_ui

KIND = "gen-spm"
NEIGHBOURS = 3  # nearest training images shown per generated image
KEPT = 24  # image sets kept for every session, oldest dropped first


@st.cache_resource(max_entries=2, show_spinner="Indexing the training images for the nearest-image search")
def training_neighbours(fingerprint: str, _dataset: Dataset) -> G.TrainingNeighbours:
    """Exact pixel-space search over every training image, forgotten ones included (shared by sessions)."""
    return G.TrainingNeighbours(_dataset)


def settings_ui(dataset: Dataset, steps: int) -> dict:
    """The class to forget, its donor, the noise seed, how many images and how many DDIM steps."""
    cols = st.columns(5)
    classes = list(range(dataset.num_classes))
    q = cols[0].selectbox("Class to forget", classes, index=workflow.first_class_with_oracle(KIND, dataset),
                          format_func=lambda c: class_label(dataset, c), key="gen-class",
                          help="Preselected: the first class whose oracle is stored, so it needs no training.")
    donors = [c for c in classes if c != q]
    donor = cols[1].selectbox("Its support becomes", donors, key=f"gen-donor-{q}",
                              format_func=lambda c: class_label(dataset, c),
                              help="Its images fill q's support, relabelled q (the authors: class 0, or 1 for q = 0).")
    seed = cols[2].number_input("Noise seed", 0, 10**6, 0, key="gen-seed", help="The same noise in all three grids.")
    n = cols[3].slider("Images", 4, 16, 8, step=4, key="gen-n")
    steps = cols[4].slider("DDIM steps", 5, 100, steps, step=5, key="gen-steps")
    return {"q": int(q), "donor": int(donor), "seed": int(seed), "n": int(n), "steps": int(steps)}


def oracle_ui(dataset: Dataset, q: int):
    """The oracle retrained without q: ready (returned), training (its progress), or a button that starts it."""
    request = request_classes(dataset, [q])
    job = oracle_job(KIND, dataset, request, start=False)  # the first of the K oracles (seed + 1)
    if job is None and bundle.is_available(KIND, dataset, train_config=workflow.oracle_train_config(KIND, dataset, 1),
                                           excluded=request):
        job = oracle_job(KIND, dataset, request)  # stored: it loads in seconds
    if job is not None and job_status_ui(job, f"oracle without {class_label(dataset, q)}"):
        return job.result, job
    if (job is None or not job.active) and st.button(f"Train the oracle without {class_label(dataset, q)}",
                                                     key="gen-oracle", help="The same recipe, on the backend.") \
            and not training_refused_ui():
        oracle_job(KIND, dataset, request, asked=True)
        st.rerun()
    return None, job


@st.cache_resource(show_spinner=False)
def drawn() -> tuple[dict, threading.Lock]:
    """Image sets already drawn, shared by sessions (sampling is a function of the model and the settings, so a
    set drawn once is the set anyone would draw), the oldest dropped first."""
    return {}, threading.Lock()


def sampled(name: str, model_key: str, model, s: dict) -> np.ndarray:
    """``model``'s images for the settings ``s``: drawn here with a progress bar, or kept from before."""
    kept, lock = drawn()
    key = (model_key, name, *s.values())
    if key not in kept:
        bar = st.progress(0.0, text=f"{name}: sampling")
        images = model.sample(s["q"], s["n"], s["seed"], s["steps"],
                              progress=lambda f, message: bar.progress(min(f, 1.0), text=f"{name}: {message}"))
        bar.empty()
        with lock:
            kept[key] = images
            while len(kept) > KEPT:
                kept.pop(next(iter(kept)))
    return kept[key]


def grid_ui(title: str, images: np.ndarray, dataset: Dataset, classifier, q: int) -> None:
    """One grid with each image's classifier label, and the nearest training images of each under it."""
    st.markdown(f"**{title}**")
    labels = G.predicted_labels(classifier, images) if classifier is not None else None
    captions = [f"#{i}" + (f" → {class_label(dataset, int(labels[i]))}" if labels is not None else "")
                for i in range(len(images))]
    image_grid_ui(list(images), captions, columns=4)
    if labels is not None:
        st.caption(f"{(labels == q).mean() * 100:.0f}% labelled {class_label(dataset, q)} by the classifier")
    found = G.memorisation(training_neighbours(dataset.fingerprint(), dataset), images, k=NEIGHBOURS + 1)
    summary = found.summary(np.flatnonzero(dataset.y_train == q))
    with st.expander(f"Nearest training images: {summary['nearest_is_forgotten_pct']:.0f}% in class {q}, "
                     f"{summary['near_copies_pct']:.0f}% near copies"):
        for i in range(len(images)):
            ids, dist = found.ids[i, :NEIGHBOURS], found.distances[i, :NEIGHBOURS]
            image_grid_ui([images[i], *dataset.x_train[ids]],
                          [f"image {i}" + (" (near copy)" if found.near_copy[i] else "")] +
                          [f"{class_label(dataset, int(dataset.y_train[j]))} d={d:.1f}" for j, d in zip(ids, dist)],
                          columns=NEIGHBOURS + 1)


def memory_ui(before, after, dataset: Dataset, s: dict) -> None:
    """What forgetting changed, read from the model's support pools."""
    check = after.memory_check(np.flatnonzero(dataset.y_train == s["q"]))
    st.success(f"Forgot {class_label(dataset, s['q'])}: {check['forgotten_in_memory']} of its "
               f"{check['forgotten_ids']:,} training images remain in any support pool; its support now holds "
               f"{len(after.pools[s['q']]):,} images of {class_label(dataset, s['donor'])} relabelled "
               f"{s['q']}. No weight changed ({len(before.memory_ids()):,} -> {check['memory_entries']:,} images in "
               "the pools).")


def main() -> None:
    st.header("Generate (generation SPM)")
    st.caption(__doc__.split("\n\n", 1)[1].replace("\n", " "))
    dataset = page_dataset(__file__)
    trained = ready_model(KIND, dataset)
    if trained is None:
        poll_while_active([untrained_model_ui(KIND, dataset, "gen-train")])
        return
    model = trained.classifier
    s = settings_ui(dataset, model.config.diffusion.sample_steps)
    classifier = getattr(ready_model("parametric", dataset), "classifier", None)
    if classifier is None:
        st.info("Train the parametric model on the Models page to see the label it gives each image.")
    oracle, job = oracle_ui(dataset, s["q"])
    after = model.forget_class(s["q"], s["donor"])
    memory_ui(model, after, dataset, s)
    go = st.button("Generate", type="primary", key="gen-go")
    kept = drawn()[0]
    panels = [("before forgetting", trained.key, model), ("after forgetting", trained.key, after),
              ("oracle", oracle.key, oracle.classifier.forget_class(s["q"], s["donor"])) if oracle else None]
    for col, panel in zip(st.columns(3), panels):
        if panel is None:
            col.caption("The oracle's grid appears here once it is trained.")
        elif go or (panel[1], panel[0], *s.values()) in kept:
            with col:
                grid_ui(f"{panel[0].capitalize()}: class {class_label(dataset, s['q'])}",
                        sampled(*panel, s), dataset, classifier, s["q"])
    poll_while_active([job])


main()
