"""Models: train or load the original models of the chosen dataset, and see how good they are."""

import streamlit as st

from core import bundle, charts, store, workflow
from core.backend import Job
from core.data import Dataset
from core.eval import metrics as M
from core.models import get_model_kind, list_model_kinds
from core.views import class_labels, recipe_note
from pages.common import model_job, warm_job
from pages.sidebar import page_dataset
from pages.state import session_state
from pages.uploads import checkpoint_ui, own_data_ui
from pages.widgets import job_status_ui, poll_while_active

FIRST = ("parametric", "spm")  # queued first: the models every page uses


def trained_ui(trained: bundle.TrainedModel, dataset: Dataset) -> None:
    """A trained model's accuracy, training time, store key and per-class test accuracy."""
    meta = trained.meta
    cols = st.columns(3)
    cols[0].metric("Test accuracy", f"{meta.get('test_acc', float('nan')):.2f}%",
                   help="% of held-out test images classified correctly.")
    train_s = workflow.train_seconds(trained)
    cols[1].metric("Training time", f"{train_s:.0f} s" if train_s else "n/a",
                   help="Wall-clock time of the training run that produced these weights.")
    cols[2].metric("Training images", f"{meta.get('num_train_ids', dataset.num_train):,}")
    origin = "your upload, in this session only" if "uploaded_as" in meta else \
        "a content hash of kind, configs and data"
    st.caption(f"Stored as `{trained.key}` ({origin}) · data `{meta.get('dataset_fingerprint', '')}`")
    if "uploaded_as" not in meta and (stored := store.find_model(trained.key)) is not None:
        weights_download_ui(stored)
    per_class = M.per_class_accuracy(trained.classifier.split_proba(dataset, "test"), dataset.y_test,
                                     dataset.num_classes)
    st.plotly_chart(charts.grouped_bars(class_labels(dataset), {"test accuracy %": per_class}, "test accuracy %",
                                        height=220), width="stretch", key=f"models-per-class-{trained.key}")


def weights_download_ui(stored: store.StoredModel) -> None:
    """The stored model's weights file, read and checked against its recorded SHA-256 only when clicked: to
    unlearn with another tool, then to judge the result here."""
    sha = stored.meta.get("weights_sha256", "")
    st.download_button("Download the weights (safetensors)", lambda: store.verified_weights(stored),
                       f"{stored.key}.safetensors", "application/octet-stream", key=f"models-weights-{stored.key}",
                       help=f"The network's weights as stored (SHA-256 {sha[:16]}…). Unlearn them with your own code, "
                            "then judge the result against the oracles: the Predictions page's Runs and audit tab "
                            "(Judge weights unlearned elsewhere), or `python -m core audit --weights FILE`.")


def model_ui(kind: str, dataset: Dataset) -> Job | None:
    """One model kind: what it is, its recipe, a load/train button or its progress, and how good it is."""
    spec = get_model_kind(kind)
    with st.container(border=True):
        st.subheader(f"{kind} {'· by design' if spec.by_design else ''}")
        st.caption(f"{spec.description} · recipe on *{dataset.name}*: {recipe_note(dataset, kind)}")
        if (own := session_state().checkpoints.get(f"{dataset.fingerprint()}:{kind}")) is not None:
            st.info(f"This session uses your weights **{own.meta['uploaded_as']}** (SHA-256 "
                    f"{own.meta['weights_sha256'][:12]}...) instead of the shared original.")
            trained_ui(own, dataset)
            return None
        stored = bundle.is_available(kind, dataset)
        job = model_job(kind, dataset, start=False)
        if job is None and (stored or (dataset.num_train <= 5000 and kind in FIRST)):
            job = model_job(kind, dataset)  # loading is instant; tiny sets train in seconds
        if (job is None or job.state in ("failed", "cancelled")) and st.button(
                f"{'Load' if stored else 'Train'} {kind}", key=f"train-{kind}", type="primary"):
            model_job(kind, dataset, asked=True)
            st.rerun()
        if job_status_ui(job):
            if spec.by_design:
                warm_job(kind, dataset, job.result)
            trained_ui(job.result, dataset)
    return job


def main() -> None:
    st.header("Models")
    dataset = page_dataset(__file__, required=False)
    if dataset is None:
        st.warning("No dataset is loaded: pick another one in the sidebar or upload your own below.")
        own_data_ui()
        return
    st.markdown(
        "Every model is trained once on the full training set and stored; the next start loads it. "
        "**By-design** models (SPM, MUNKEY) forget by editing a memory of training samples; the **parametric** "
        "network is what post-hoc methods (DAMP, fine-tuning, ...) edit.")
    kinds = sorted((k for k in list_model_kinds() if not get_model_kind(k).generative),  # those: Generate page
                   key=lambda k: (k not in FIRST, FIRST.index(k) if k in FIRST else 0))
    poll_while_active([model_ui(kind, dataset) for kind in kinds])
    own_data_ui()
    checkpoint_ui(dataset)


main()
