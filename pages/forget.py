"""Forget: say what to forget; by-design models forget at once, oracles and post-hoc methods run in the background."""

import streamlit as st

from core import workflow
from core.data import ForgetRequestError, parse_ids_text, request_classes, request_ids, request_random
from core.unlearn import get_method, list_methods
from pages.common import (
    by_design_kinds,
    class_label,
    config_form_ui,
    forget_session,
    job_status_ui,
    method_job,
    oracle_job,
    page_dataset,
    poll_while_active,
    ready_model,
    session_runs,
    untrained_model_ui,
)

st.header("Forget")
dataset = page_dataset(__file__)
session = forget_session(dataset)

st.markdown("Choose training samples to forget. **SPM** and **MUNKEY** drop them from their memory at once; "
            "an **oracle** (the same recipe retrained without them) trains in the background, so every result "
            "can be compared with what the model would be had it never seen them.")

kind = st.radio("Forget", ["classes", "random fraction", "sample ids"], horizontal=True, key="forget-kind",
                help="Whole classes, a random share of the training set, or listed ids.")
classes, fraction, seed, pasted, uploaded = [], 0.1, 0, "", None
if kind == "classes":
    classes = st.multiselect("Classes to forget", list(range(dataset.num_classes)),
                             format_func=lambda c: class_label(dataset, c), key="forget-classes")
elif kind == "random fraction":
    fraction = st.slider("Fraction of the training set (%)", 1, 50, 10, key="forget-fraction") / 100
    seed = st.number_input("Seed", 0, 10_000, 0, key="forget-seed",
                           help="The same seed picks the same samples, so results can be reproduced.")
elif kind == "sample ids":
    pasted = st.text_area("Training ids (commas, spaces or one per line)", key="forget-ids",
                          placeholder="12, 40, 913")
    uploaded = st.file_uploader("...or a CSV/TXT file of ids", type=["csv", "txt"], key="forget-ids-file")

add = st.checkbox("Add to what is already forgotten", value=False, key="forget-add",
                  disabled=session.current is None)

cols = st.columns([1, 1, 1, 3])
if cols[0].button("Forget", type="primary", key="forget-go"):
    try:
        if kind == "classes":
            request = request_classes(dataset, classes)
        elif kind == "random fraction":
            request = request_random(dataset, fraction, int(seed))
        else:
            text = uploaded.getvalue().decode("utf-8", errors="replace") if uploaded is not None else pasted
            request = request_ids(dataset, parse_ids_text(text))
        request = session.push(dataset, request, add_to_current=add)
    except ForgetRequestError as err:
        st.error(f"Nothing was forgotten: {err}")
    else:
        st.toast(f"Forgetting {request.description}")
if cols[1].button("Undo", disabled=session.current is None, key="forget-undo",
                  help="Go back to the previous request (the original models are never changed)."):
    session.undo()
    st.rerun()
if cols[2].button("Reset", disabled=session.current is None, key="forget-reset", help="Forget nothing."):
    session.reset()
    st.rerun()

request = session.current
if request is None:
    st.info("Nothing is forgotten yet.")
    st.stop()

st.subheader(f"Now forgetting: {request.description}")
st.caption(f"{len(request):,} training samples · request key `{request.key()}` · "
           f"history: {' → '.join(r.description for r in session.history)}")

jobs = []
for kind_name in by_design_kinds():
    trained = ready_model(kind_name, dataset)
    with st.container(border=True):
        st.markdown(f"**{kind_name}**")
        if trained is None:
            jobs.append(untrained_model_ui(kind_name, dataset, f"forget-train-{kind_name}"))
            continue
        applied = session.apply_by_design(trained.key, trained.classifier)
        st.success(f"Deleted {len(request):,} samples from the memory in {applied.seconds * 1000:.1f} ms; "
                   "no weight changed.")
        for offset, label in ((0, "oracle"), (1, "second oracle (noise floor)")):
            job = oracle_job(kind_name, dataset, request, offset)
            jobs.append(job)
            if job_status_ui(job, f"{kind_name} {label}"):
                st.caption(f"{label} ready ({workflow.train_seconds(job.result) or 0:.0f} s of training).")

st.subheader("Post-hoc methods on the parametric network")
methods = list_methods("parametric", request)
if not methods:
    st.caption("No post-hoc method applies to this request.")
else:
    chosen = st.multiselect("Methods", methods, key="forget-methods",
                            format_func=lambda m: f"{m}: {get_method(m).description}")
    configs = {}
    for name in chosen:
        with st.expander(f"{name} settings · {get_method(name).paper}"):
            configs[name] = config_form_ui(get_method(name).config_cls, f"cfg-{name}")
    if chosen and st.button("Run the chosen methods", key="forget-run-methods"):
        original = ready_model("parametric", dataset)
        if original is None:
            st.error("The parametric model is not trained for this dataset yet: train it on the Models page.")
        else:
            oracle_job("parametric", dataset, request)
            for name in chosen:
                try:
                    method_job(name, original, dataset, request, configs[name])
                except ValueError as err:
                    st.error(f"{name}: {err}")
    for job in session_runs(request):
        jobs.append(job)
        if job_status_ui(job):
            st.caption(f"{job.title}: done in {job.result.seconds:.2f} s — see the Predictions page.")
poll_while_active(jobs)
