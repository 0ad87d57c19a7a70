"""Forget: say what to forget; by-design models forget at once, oracles and post-hoc methods run in the background."""

import streamlit as st

from core import bundle
from core.backend import Job
from core.data import Dataset, ForgetRequest, ForgetRequestError, parse_ids_bytes, parse_ids_text
from core.data.requests import request_classes, request_ids, request_random
from core.session import ForgetSession
from core.unlearn import get_method, list_methods
from core.views import class_label
from pages import common
from pages.common import (
    by_design_kinds,
    forget_session,
    method_job,
    oracle_jobs,
    ready_model,
    release_request_jobs,
    session_runs,
)
from pages.sidebar import page_dataset
from pages.widgets import (
    config_form_ui,
    job_status_ui,
    keep_value,
    oracle_jobs_ui,
    poll_while_active,
    training_refused_ui,
    trainings_waiting_ui,
    untrained_model_ui,
)

KINDS = ("classes", "random fraction", "sample ids")
# each picker's value before the user sets one; read by the pickers and by ``asked_request`` alike
PICKED = {"forget-kind": KINDS[0], "forget-fraction": 10, "forget-seed": 0, "forget-ids": "", "forget-add": False}


@st.fragment
def asked_request_ui(dataset: Dataset) -> None:
    """The request pickers. A fragment of their own: picking reruns them alone, and clicking Forget (in
    ``forget_ui``) does not send them again. What was picked stays picked when the user comes back from another page
    (``keep_value``)."""
    keep_value("forget-kind", PICKED["forget-kind"])
    kind = st.radio("Forget", KINDS, horizontal=True, key="forget-kind",
                    help="Whole classes, a random share of the training set, or listed ids.")
    if kind == "classes":
        options = list(range(dataset.num_classes))
        keep_value("forget-classes", [], options)  # picked on another dataset: only the classes this one has
        st.multiselect("Classes to forget", options, format_func=lambda c: class_label(dataset, c),
                       key="forget-classes")
    elif kind == "random fraction":
        keep_value("forget-fraction", PICKED["forget-fraction"])
        keep_value("forget-seed", PICKED["forget-seed"])
        st.slider("Fraction of the training set (%)", 1, 50, key="forget-fraction")
        st.number_input("Seed", 0, 10_000, key="forget-seed",
                        help="The same seed picks the same samples, so results can be reproduced.")
    else:
        keep_value("forget-ids", PICKED["forget-ids"])
        st.text_area("Training ids (commas, spaces or one per line)", key="forget-ids", placeholder="12, 40, 913")
        st.file_uploader("...or a CSV/TXT file of ids", type=["csv", "txt"], key="forget-ids-file")
    keep_value("forget-add", PICKED["forget-add"])
    st.checkbox("Add to what is already forgotten", key="forget-add",
                help="Forget these samples as well as those forgotten now, rather than instead of them.")


def picked(key: str):
    """What the picker ``key`` holds in this session (its ``PICKED`` value before the user sets one)."""
    return st.session_state.get(key, PICKED.get(key))


def asked_request(dataset: Dataset) -> ForgetRequest:
    """The request the pickers of ``asked_request_ui`` say (read from the session's widget state); may refuse it."""
    kind = picked("forget-kind")
    if kind == "classes":
        return request_classes(dataset, picked("forget-classes") or [])
    if kind == "random fraction":
        return request_random(dataset, picked("forget-fraction") / 100, int(picked("forget-seed")))
    if (uploaded := picked("forget-ids-file")) is not None:  # decoded by core: a non-UTF-8 file named with its line
        return request_ids(dataset, parse_ids_bytes(uploaded.getvalue(), uploaded.name))
    return request_ids(dataset, parse_ids_text(picked("forget-ids")))


def request_ui(dataset: Dataset, session: ForgetSession) -> None:
    """The Forget / Undo / Reset buttons that change this session's history."""
    cols = st.columns([1, 1, 1, 3])
    if cols[0].button("Forget", type="primary", key="forget-go"):
        try:  # what is forgotten now is the heading just below: no toast (its animation is browser work per click)
            session.push(dataset, asked_request(dataset), add_to_current=picked("forget-add"))
        except ForgetRequestError as err:
            st.error(f"Nothing was forgotten: {err}")
    if cols[1].button("Undo", disabled=session.current is None, key="forget-undo",
                      help="Go back to the previous request (the original models are never changed); its oracles "
                           "and method runs still going stop, unless another session asked for them too."):
        if sum(r.key() == session.current.key() for r in session.history) == 1:  # not also an earlier step
            release_request_jobs(dataset, session.current)
        session.undo()
        st.rerun()
    if cols[2].button("Reset", disabled=session.current is None, key="forget-reset",
                      help="Forget nothing; the oracles and method runs still going for this session stop, unless "
                           "another session asked for them too."):
        for request in {r.key(): r for r in session.history}.values():
            release_request_jobs(dataset, request)
        session.reset()
        st.rerun()


def by_design_ui(dataset: Dataset, session: ForgetSession) -> list[Job | None]:
    """Each by-design model after the deletion, and its K oracles; returns the jobs to poll. The models ready to
    forget come first, so that what the click did shows above those still to be trained."""
    request, jobs = session.current, []
    models = {kind: ready_model(kind, dataset) for kind in by_design_kinds()}
    for kind, trained in sorted(models.items(), key=lambda item: item[1] is None):
        with st.container(border=True):
            st.markdown(f"**{kind}**")
            if trained is None:
                jobs.append(untrained_model_ui(kind, dataset, f"forget-train-{kind}"))
                continue
            applied = session.apply_by_design(trained.key, trained.classifier)
            st.success(f"Deleted {len(request):,} samples from the memory in {applied.seconds * 1000:.1f} ms; "
                       "no weight changed.")
            oracles = oracle_jobs(kind, dataset, request)
            jobs += oracles
            oracle_jobs_ui(kind, oracles, f"{kind}-{request.key()}")
            jobs += trainings_waiting_ui(oracles, f"{kind} oracle")
    return jobs


def methods_ui(dataset: Dataset, request: ForgetRequest) -> list[Job]:
    """Post-hoc methods to run on the parametric network, their settings, and this session's runs."""
    st.subheader("Post-hoc methods on the parametric network")
    methods = list_methods("parametric", request)
    if not methods:
        st.caption("No post-hoc method applies to this request.")
        return []
    keep_value("forget-methods", [], methods)  # those that apply to this request
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
        elif not training_refused_ui():
            oracle_jobs("parametric", dataset, request)
            for name in chosen:
                try:
                    method_job(name, original, dataset, request, configs[name])
                except ValueError as err:
                    st.error(f"{name}: {err}")
    runs = session_runs(request)
    for job in runs:
        if job_status_ui(job):
            took = "" if job.result.seconds is None else f" in {job.result.seconds:.2f} s"
            st.caption(f"{job.title}: done{took} — see the Predictions page.")
    return runs


def preload(dataset: Dataset) -> None:
    """Load the stored by-design models, then their predictions and their recorded oracles, while the user picks
    what to forget."""
    for kind in (k for k in by_design_kinds() if bundle.is_available(k, dataset)):
        if (job := common.model_job(kind, dataset)) is not None and job.finished_ok:
            common.warm_job(kind, dataset, job.result)
            common.read_records(kind, dataset.fingerprint(), dataset)


def main() -> None:
    st.header("Forget")
    dataset = page_dataset(__file__)
    preload(dataset)
    session = forget_session(dataset)
    st.markdown("Choose training samples to forget. **SPM** and **MUNKEY** drop them from their memory at once; "
                "**oracles** (the same recipe retrained without them, each on its own seed) train in the "
                "background, so every result can be compared with what the model would be had it never seen them.")
    asked_request_ui(dataset)
    forget_ui(dataset, session)


@st.fragment
def forget_ui(dataset: Dataset, session: ForgetSession) -> None:
    """The request and what it did. A fragment: clicking Forget reruns this part alone, not the pickers, the sidebar
    and the page around it: fewer messages for the server to send and less for the browser to redraw, which add
    up with a classroom on one server. The sidebar is redrawn at the next full run (Undo, Reset, a finished job,
    another page), so the sidebar box naming the request is left off this page, whose heading names it."""
    request_ui(dataset, session)
    request = session.current
    if request is None:
        st.info("Nothing is forgotten yet.")
        return
    st.subheader(f"Now forgetting: {request.description}")
    repeats = request.duplicates_dropped  # a listed id repeated is harmless: said, not refused
    st.caption(f"{len(request):,} training samples · request key {request.key()} · "
               + (f"{repeats:,} repeated id{'s' if repeats > 1 else ''} dropped: each id is forgotten once · "
                  if repeats else "")
               + f"history: {' → '.join(r.description for r in session.history)}")
    poll_while_active(by_design_ui(dataset, session) + methods_ui(dataset, request))


main()
