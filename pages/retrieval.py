"""Retrieval: the training samples MUNKEY reads for one test image, before and after this session's deletion."""

import numpy as np
import pandas as pd
import streamlit as st

from core.data import Dataset
from core.eval import munkey_diag
from core.models.base import Classifier
from core.session import ForgetSession
from core.views.retrieval import no_longer_retrieved, retrieval_panel, touched_summary
from pages.common import forget_session, oracle_job, ready_model
from pages.sidebar import page_dataset
from pages.state import session_state
from pages.widgets import image_grid_ui, poll_while_active, untrained_model_ui

TEST_ID = "retrieval-test-id"  # the test-image picker; the buttons below set it


def test_image_ui(dataset: Dataset, model: Classifier, after: Classifier | None, session: ForgetSession) -> int:
    """The test image to explain: typed in, drawn at random, or one that the deletion touched."""
    n_test, state = len(dataset.y_test), session_state().retrieval
    st.session_state.setdefault(TEST_ID, 0)
    cols = st.columns([2, 1, 1])
    if cols[1].button("Random test image", key="retrieval-random"):
        st.session_state[TEST_ID] = int(np.random.default_rng().integers(n_test))
    if cols[2].button("One the deletion touched", key="retrieval-touched", disabled=after is None,
                      help="A test image that retrieved a forgotten sample, preferably one whose prediction changed."):
        with st.spinner("Finding the test images whose retrieval included a forgotten sample"):
            touched = munkey_diag.deletion_touched_test_images(model, after, dataset, session.current.ids)
        pool = touched["changed"] if len(touched["changed"]) else touched["retrieved_forgotten"]
        state.touched = touched_summary(touched, session.current.key())
        if len(pool):
            st.session_state[TEST_ID] = int(np.random.default_rng().choice(pool))
    summary = state.touched
    if after is not None and summary and summary["request"] == session.current.key():
        st.caption(f"{summary['retrieved_forgotten']:,} of {n_test:,} test images retrieved a forgotten sample; "
                   f"{summary['changed']:,} of them changed their predicted class (no other image can: its "
                   "retrieval is unchanged).")
    return int(cols[0].number_input("Test image id", 0, n_test - 1, step=1, key=TEST_ID))


def panel_ui(title: str, explained: dict, dataset: Dataset, forgotten: set[int]) -> None:
    panel = retrieval_panel(explained, dataset, forgotten)
    st.markdown(f"**{title}**: predicts **{panel.prediction}** ({panel.confidence:.2f})")
    image_grid_ui(panel.images, panel.captions, columns=max(1, len(panel.images)))


def retrieved_ui(dataset: Dataset, test_id: int, model: Classifier, after: Classifier | None,
                 session: ForgetSession) -> None:
    """The image, what it retrieves before the deletion and, when something is forgotten, after it."""
    x = dataset.x_test[test_id]
    left, right = st.columns([1, 4])
    left.image(x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0), width=120, clamp=True,
               caption=f"test #{test_id}: {dataset.class_names[dataset.y_test[test_id]]}")
    forgotten = set(session.current.ids) if session.current is not None else set()
    with right:
        before = model.explain(x[None])
        panel_ui("Before deletion", before, dataset, forgotten)
        if after is None:
            st.info("Nothing is forgotten in this session: choose what to forget on the Forget page to see the "
                    "retrieval after deletion.")
            return
        explained = after.explain(x[None])
        panel_ui(f"After forgetting {session.current.description}", explained, dataset, set())
        gone = no_longer_retrieved(before, explained)
        if gone:
            st.caption(f"No longer retrieved: {', '.join(f'#{i}' for i in gone)}")


def memory_check_ui(after: Classifier, ids) -> None:
    """What the edited memory still holds of the forgotten ids, read from the model."""
    check = after.memory_check(ids)
    honoured = check["forgotten_in_memory"] == 0 and check["forgotten_token_max_abs"] == 0
    (st.success if honoured else st.error)(
        f"Memory check, read from the edited model: its key bank holds {check['memory_entries']:,} entries; "
        f"{check['forgotten_in_memory']:,} of the {check['forgotten_ids']:,} forgotten ids are among them, "
        f"and the largest value left in their exemplar tokens is {check['forgotten_token_max_abs']:g}.")


def image_only_ui(dataset: Dataset, model: Classifier, after: Classifier | None, session: ForgetSession) -> None:
    """A_img of the models before and after the deletion and of the oracle, on request."""
    with st.expander("What the shared weights know without the memory (A_img)"):
        st.markdown(munkey_diag.EXPLANATIONS["A_img"])
        st.markdown(munkey_diag.EXPLANATIONS["pathway_sensitivity"])
        st.caption("A_img on the forgotten samples above A_img on the test set means the shared weights kept what "
                   "was deleted; compare with the oracle's, which never saw them (a split can differ on its own).")
        if not st.button("Compute A_img", key="retrieval-aimg",
                         help="An image-only pass over the test and training sets."):
            return
        models = {"before deletion": model}
        if after is not None:
            models["after deletion"] = after
            oracle = oracle_job("munkey", dataset, session.current, start=False)
            if oracle is not None and oracle.finished_ok:
                models["MUNKEY oracle"] = oracle.result.classifier
        rows = [{"model": name, **munkey_diag.diagnostics(m, dataset, session.current)} for name, m in models.items()]
        st.dataframe(pd.DataFrame(rows), hide_index=True)


def main() -> None:
    st.header("Retrieval (MUNKEY)")
    st.caption("MUNKEY (arXiv 2603.15033) retrieves the K training samples whose frozen keys are nearest to the "
               "image and reads each one's learned exemplar token; forgetting deletes keys, so deleted samples can "
               "never be retrieved again. No weight changes.")
    dataset = page_dataset(__file__)
    trained = ready_model("munkey", dataset)
    if trained is None:
        poll_while_active([untrained_model_ui("munkey", dataset, "retrieval-load")])
        return
    model, session = trained.classifier, forget_session(dataset)
    applied = session.apply_by_design(trained.key, model)
    after = applied.model if applied is not None else None
    test_id = test_image_ui(dataset, model, after, session)
    retrieved_ui(dataset, test_id, model, after, session)
    if after is not None:
        memory_check_ui(after, session.current.ids)
    image_only_ui(dataset, model, after, session)


main()
