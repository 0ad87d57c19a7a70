"""Retrieval: the training samples MUNKEY reads for one test image, before and after this session's deletion."""

import numpy as np
import pandas as pd
import streamlit as st

from core.eval import munkey_diag
from pages.common import (
    forget_session,
    image_grid_ui,
    oracle_job,
    page_dataset,
    poll_while_active,
    ready_model,
    untrained_model_ui,
)

st.header("Retrieval (MUNKEY)")
st.caption("MUNKEY (arXiv 2603.15033) retrieves the K training samples whose frozen keys are nearest to the image "
           "and reads each one's learned exemplar token; forgetting deletes keys, so deleted samples can never be "
           "retrieved again. No weight changes.")
dataset = page_dataset(__file__)

trained = ready_model("munkey", dataset)
if trained is None:
    poll_while_active([untrained_model_ui("munkey", dataset, "retrieval-load")])
    st.stop()

model = trained.classifier
session = forget_session(dataset)
applied = session.apply_by_design(trained.key, model)
after = applied.model if applied is not None else None

n_test = len(dataset.y_test)
if "retrieval-test-id" not in st.session_state:
    st.session_state["retrieval-test-id"] = 0
cols = st.columns([2, 1, 1])
if cols[1].button("Random test image", key="retrieval-random"):
    st.session_state["retrieval-test-id"] = int(np.random.default_rng().integers(n_test))
if cols[2].button("One the deletion touched", key="retrieval-touched", disabled=after is None,
                  help="A test image that retrieved a forgotten sample, preferably one whose prediction changed."):
    with st.spinner("Finding the test images whose retrieval included a forgotten sample"):
        touched = munkey_diag.deletion_touched_test_images(model, after, dataset, session.current.ids)
    pool = touched["changed"] if len(touched["changed"]) else touched["retrieved_forgotten"]
    st.session_state["retrieval-touched-summary"] = {"request": session.current.key(),
                                                     **{k: len(v) for k, v in touched.items()}}
    if len(pool):
        st.session_state["retrieval-test-id"] = int(np.random.default_rng().choice(pool))
summary = st.session_state.get("retrieval-touched-summary")
if after is not None and summary and summary["request"] == session.current.key():
    st.caption(f"{summary['retrieved_forgotten']:,} of {n_test:,} test images retrieved a forgotten sample; "
               f"{summary['changed']:,} of them changed their predicted class (no other image can: its retrieval "
               "is unchanged).")
test_id = int(cols[0].number_input("Test image id", 0, n_test - 1, step=1, key="retrieval-test-id"))
x = dataset.x_test[test_id:test_id + 1]
names = dataset.class_names


def panel_ui(title: str, explained: dict, deleted: set[int]) -> None:
    proba = explained["proba"][0]
    st.markdown(f"**{title}**: predicts **{names[int(proba.argmax())]}** ({proba.max():.2f})")
    ids, weights, sims = explained["ids"][0], explained["weights"][0], explained["similarity"][0]
    passes = explained.get("pass_proba")
    images, captions = [], []
    for j, (i, w, s) in enumerate(zip(ids, weights, sims)):
        if i < 0:
            continue
        text = f"#{i} {names[dataset.y_train[i]]} | weight {w:.2f} | cos {s:.2f}"
        if passes is not None:
            text += f" | pass says {names[int(passes[0, j].argmax())]}"
        if int(i) in deleted:
            text += " | FORGOTTEN"
        images.append(dataset.x_train[i])
        captions.append(text)
    image_grid_ui(images, captions, columns=max(1, len(images)))


left, right = st.columns([1, 4])
left.image(dataset.x_test[test_id][0] if dataset.x_test.shape[1] == 1 else dataset.x_test[test_id].transpose(1, 2, 0),
           caption=f"test #{test_id}: {names[dataset.y_test[test_id]]}", width=120, clamp=True)
deleted = set(session.current.ids) if session.current is not None else set()
with right:
    before_expl = model.explain(x)
    panel_ui("Before deletion", before_expl, deleted)
    if after is None:
        st.info("Nothing is forgotten in this session: choose what to forget on the Forget page to see the "
                "retrieval after deletion.")
    else:
        after_expl = after.explain(x)
        panel_ui(f"After forgetting {session.current.description}", after_expl, set())
        gone = sorted(set(before_expl["ids"][0].tolist()) - set(after_expl["ids"][0].tolist()))
        if gone:
            st.caption(f"No longer retrieved: {', '.join(f'#{i}' for i in gone)}")

if after is not None:
    audit = after.memory_check(session.current.ids)
    honoured = audit["forgotten_in_memory"] == 0 and audit["forgotten_token_max_abs"] == 0
    text = (f"Memory check, read from the edited model: its key bank holds {audit['memory_entries']:,} entries; "
            f"{audit['forgotten_in_memory']:,} of the {audit['forgotten_ids']:,} forgotten ids are among them, "
            f"and the largest value left in their exemplar tokens is {audit['forgotten_token_max_abs']:g}.")
    (st.success if honoured else st.error)(text)

with st.expander("What the shared weights know without the memory (A_img)"):
    st.markdown(munkey_diag.EXPLANATIONS["A_img"])
    st.markdown(munkey_diag.EXPLANATIONS["pathway_sensitivity"])
    st.caption("A_img on the forgotten samples above A_img on the test set means the shared weights kept what "
               "was deleted; compare with the oracle's, which never saw them (a split can differ on its own).")
    if st.button("Compute A_img", key="retrieval-aimg", help="An image-only pass over the test and training sets."):
        models = {"before deletion": model}
        if after is not None:
            models["after deletion"] = after
            oracle = oracle_job("munkey", dataset, session.current, start=False)
            if oracle is not None and oracle.finished_ok:
                models["MUNKEY oracle"] = oracle.result.classifier
        rows = [{"model": name, **munkey_diag.diagnostics(m, dataset, session.current)} for name, m in models.items()]
        st.dataframe(pd.DataFrame(rows), hide_index=True)
