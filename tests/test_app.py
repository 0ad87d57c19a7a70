"""AppTest runs of the pages on digits (Runs: test_runs_page; Retrieval: test_munkey), and two browser sessions
that must not see each other's deletions."""

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.eval import metrics as M
from pages.common import backend
from tests.apptables import metrics_frame

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def wait_for_jobs():
    for job in backend().jobs():
        job.wait(600)


def started_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    wait_for_jobs()
    return at.run()


@pytest.fixture(scope="module")
def app(spm_model, parametric_model):
    return started_app()


def verdicts(at: AppTest) -> list[str]:
    """The verdict sentences the page shows (each drawn as a success, error, warning or info box)."""
    return [e.value for e in [*at.success, *at.error, *at.warning, *at.info] if e.value.startswith("**Verdict:")]


def predictions_tab(at: AppTest, tab: str) -> AppTest:
    """Choose a tab of the Predictions page (only the chosen one is drawn)."""
    at.session_state["pred-tab"] = tab
    return at.run()


def forget_class(at: AppTest, label: str) -> AppTest:
    at.switch_page("pages/forget.py").run()
    at.radio(key="forget-kind").set_value("classes").run()
    at.multiselect(key="forget-classes").select(label).run()
    return at.button(key="forget-go").click().run()


def test_models_page_shows_each_model(app):
    assert not app.exception
    accuracies = [float(m.value.rstrip("%")) for m in app.metric if m.label == "Test accuracy"]
    assert len(accuracies) >= 2
    assert min(accuracies[:2]) > 80  # parametric and SPM come first
    # each stored model's weights can be downloaded, to unlearn elsewhere and judge here
    downloads = [d.proto.label for d in app.get("download_button")]
    assert downloads.count("Download the weights (safetensors)") >= 2, downloads


def test_loaded_by_design_models_warm_their_predictions_in_the_background(app):
    warm = [j for j in backend().jobs() if j.key.startswith("warm:spm-")]
    assert warm and warm[0].title == "spm: predictions on digits"
    warm[0].wait(300)  # it runs behind the loads, at the lowest priority
    assert warm[0].finished_ok


def test_forget_page_rejects_an_empty_request():
    at = started_app()
    at.switch_page("pages/forget.py").run()
    at.button(key="forget-go").click().run()
    assert any("Nothing was forgotten" in e.value for e in at.error)


def test_forget_then_predictions_against_oracle_and_undo():
    at = forget_class(started_app(), "0: 0")
    assert not at.exception
    assert any("Deleted" in s.value and "no weight changed" in s.value for s in at.success)
    # the model that forgot comes first, above MUNKEY's box (not trained here) and its Train button
    boxes = [m.value for m in at.main.markdown if m.value in ("**spm**", "**munkey**")]
    assert boxes == ["**spm**", "**munkey**"] and at.button(key="forget-train-munkey")
    wait_for_jobs()
    at.switch_page("pages/predictions.py").run()
    wait_for_jobs()
    at.run()
    assert not at.exception
    table = metrics_frame(at)
    fa = table.set_index("metric").loc["FA"]
    assert fa["after"] == 0.0 and fa["before"] > 80
    assert "oracle" in table.columns and "oracle sd" in table.columns
    # the verdict in one sentence, against the 3 oracles (none on the original's seed), with its evidence
    (sentence,) = verdicts(at)
    assert "3 oracles" in sentence, sentence
    assert any(c.value.startswith("Oracles: 3 of 3 finished (seeds 1, 2, 3)") for c in at.caption)
    # the Metrics tab is drawn alone: the other tabs' tables, charts and images wait until one is chosen
    assert not at.dataframe and not at.get("plotly_chart") and not at.get("image")
    assert [b.proto.label for b in at.get("download_button")] == ["Export this table (CSV)"]
    # every metric explained, as one list (one element for each browser to draw, not one per metric)
    (explained,) = next(e for e in at.expander if e.label == "What the numbers mean").markdown
    assert [line.split("**")[1] for line in explained.value.splitlines()] == list(M.EXPLANATIONS)
    predictions_tab(at, "Evidence")
    assert not at.exception, at.exception
    assert verdicts(at) == [sentence] and not any("meaning" in d.value.columns for d in at.dataframe)
    criteria = next(d.value for d in at.dataframe if "measure" in d.value.columns)
    assert {"forget accuracy", "forgotten class's test accuracy"} <= set(criteria["measure"])
    assert {"band low", "band high", "original", "method lies"} <= set(criteria.columns)
    beside = criteria[criteria["in the verdict"] != "yes"]  # what the model keeps: shown, never deciding
    assert list(beside["measure"]) == ["retained classes' test accuracy"]
    assert any(m.value.startswith("**Which rule applies.** Class request") for m in at.markdown)
    assert any(e.label == "The verdict rule" for e in at.expander)
    spread = next(d.value for d in at.dataframe if "oracle-to-oracle mean" in d.value.columns)
    assert {"TA", "FA", "MIA", "PG", "KL"} <= set(spread["metric"])
    klom = next(d.value for d in at.dataframe if "KLoM-Gauss P95" in d.value.columns)
    assert len(klom) == 3  # forget, retain, validation
    attacks = next(d.value for d in at.dataframe if "TPR at 1% FPR %" in d.value.columns)
    assert list(attacks["model"][:2]) == ["method", "original"] and "TPR at 5% FPR %" in attacks.columns
    assert any("SVC MIA-efficacy %" in d.value.columns for d in at.dataframe)
    assert [b.proto.label.split(" (")[0] for b in at.get("download_button")] == ["Download the per-sample table"]
    # what SPM's encoder, trained on class 0, still reveals: measured on demand against the oracles
    at.button(key="pred-residue").click().run()
    assert not at.exception, at.exception
    assert at.session_state["pred-tab"] == "Evidence"  # a click inside a tab keeps it chosen
    residue = next(d.value for d in at.dataframe if "band high" in d.value.columns and "unlearned" in d.value.columns)
    assert list(residue["unlearned"]) == list(residue["original"])  # the deletion moved no weight
    assert any(e.value.startswith("The deletion moved no weight") for e in [*at.success, *at.warning])
    predictions_tab(at, "What changed")
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2 and at.slider(key="pred-limit").value == 24 and at.get("image")
    assert [b.proto.label for b in at.get("download_button")] == ["Export changed predictions (JSON)"]
    at.slider(key="pred-limit").set_value(8).run()
    assert len(at.get("image")) == 8
    # the audit section reads SPM's memory and offers the report
    predictions_tab(at, "Runs and audit")
    assert not at.exception, at.exception
    assert any(s.value.startswith("Memory check: 0 of the") for s in at.success)
    assert any("Mean membership exposure" in m.value for m in at.markdown)
    assert len(at.get("download_button")) >= 3  # the audit report as HTML, JSON and Markdown
    # what else the model object carries, and a purged copy that carries none of it
    artifacts = next(d.value for d in at.dataframe if "in_purged_copy" in d.value.columns)
    assert artifacts.set_index("artifact").loc["memory entries", "forgotten_rows"] == 0
    at.button(key="pred-purge").click().run()
    assert not at.exception, at.exception
    assert any(b.proto.label == "Download the purged copy (zip)" for b in at.get("download_button"))
    predictions_tab(at, "What changed")  # a widget inside a tab keeps its value across tabs
    assert at.slider(key="pred-limit").value == 8 and len(at.get("image")) == 8
    at.switch_page("pages/forget.py").run()  # ...and the Forget page's pickers keep theirs across pages
    assert at.radio(key="forget-kind").value == "classes" and at.multiselect(key="forget-classes").value == [0]
    at.button(key="forget-undo").click().run()
    assert any("Nothing is forgotten" in i.value for i in at.info)


def forget_random(at: AppTest, seed: int) -> AppTest:
    """Forget a random 10% (the slider's default) picked with ``seed``: its oracles train on Ray."""
    at.switch_page("pages/forget.py").run()
    at.radio(key="forget-kind").set_value("random fraction").run()
    at.number_input(key="forget-seed").set_value(seed).run()
    return at.button(key="forget-go").click().run()


def test_undo_stops_the_undone_requests_oracles():
    at = forget_random(started_app(), 4321)
    jobs = [j for j in backend().jobs() if j.key.startswith("oracle:spm:") and "random 10% (seed 4321)" in j.title]
    assert len(jobs) == 3, [j.title for j in backend().jobs()]
    clicked = time.time()
    at.button(key="forget-undo").click().run()
    assert not at.exception, at.exception
    for job in jobs:
        job.wait(60)
    # each stopped, unless it had finished before the click; two workers leave at least one still queued then
    assert all(j.state == "cancelled" or (j.state == "done" and j.finished <= clicked) for j in jobs), \
        [(j.state, j.finished - clicked) for j in jobs]
    assert any(j.state == "cancelled" for j in jobs)


def test_a_session_with_its_share_of_trainings_going_starts_more_only_as_they_end(monkeypatch, parametric_model):
    """One session clicking Forget again and again must not queue work every other session's oracles then wait
    behind (Ray runs tasks in the order they come): past its share (UE_SESSION_TRAININGS) it starts none."""
    import pages.common
    from core.backend import Job
    from pages import state

    def oracles(seed):
        return [j for j in backend().jobs() if j.key.startswith("oracle:spm:") and f"(seed {seed})" in j.title]

    at = forget_random(started_app(), 4324)
    going = backend().trainings(at.session_state[state.KEY].id)  # read first: a job active after was active then
    assert len(oracles(4324)) == 3 and {j.key for j in oracles(4324) if j.active} <= {j.key for j in going}

    monkeypatch.setenv("UE_SESSION_TRAININGS", "2")
    busy = [Job(f"busy-{i}", "a training of this session") for i in range(2)]
    monkeypatch.setattr(pages.common, "session_trainings", lambda: busy)
    forget_random(at, 4325)
    assert not at.exception, at.exception
    assert oracles(4325) == []  # nothing sent to Ray
    assert ("3 spm oracles waiting: this browser session has 2 trainings going, and its share of this server is 2 "
            "at once ($UE_SESSION_TRAININGS). They start as yours finish") in \
        " ".join(c.value for c in at.caption)
    at.multiselect(key="forget-methods").select("ft").run()
    at.button(key="forget-run-methods").click().run()
    assert any(w.value.startswith("Not started: this browser session has 2 trainings going") for w in at.warning)
    assert not [j for j in backend().jobs() if j.title.startswith("ft on random 10% (seed 4325)")]

    busy.pop()  # one of its own has ended: the next redraw (the page polls them) starts the waiting oracles
    at.run()
    assert not at.exception, at.exception
    assert len(oracles(4325)) == 3 and not any("oracles waiting" in c.value for c in at.caption)


def test_cancelled_oracles_stay_cancelled_until_asked_again():
    at = forget_random(started_app(), 4322)

    def oracles():
        return [j for j in backend().jobs() if j.key.startswith("oracle:spm:") and "(seed 4322)" in j.title]

    first = oracles()
    assert len(first) == 3 and any(j.active for j in first)
    (cancel,) = [b for b in at.button if b.key.startswith("cancel-oracles-spm-")]
    cancel.click().run()
    for job in first:
        job.wait(60)
    for _ in range(2):  # the redraws after they end (the page's poll) start nothing again
        at.run()
    assert not at.exception, at.exception
    assert all(j.state in ("cancelled", "done") for j in oracles()) and any(j.state == "cancelled" for j in oracles())
    assert any(w.value.startswith("spm oracle") and "cancelled" in w.value for w in at.warning)
    at.button(key=next(b.key for b in at.button if b.key.startswith("restart-oracles-spm-"))).click().run()
    restarted = [j for j in oracles() if not any(j is f for f in first)]
    assert restarted and all(j.active or j.state == "done" for j in restarted), [j.state for j in oracles()]


def test_a_failed_oracle_shows_its_cause_and_starts_again_only_when_asked(monkeypatch, spm_model):
    from dataclasses import replace

    from core import workflow

    real = workflow.train_remote

    def on_a_missing_gpu(*args, **kwargs):  # the worker fails at once, as an oracle asked on a GPU it lacks would
        task = real(*args, **kwargs)
        kind, dataset, config, train_config, excluded = task.args
        task.args = (kind, dataset, config, replace(train_config, device="cuda"), excluded)
        return task

    monkeypatch.setattr(workflow, "train_remote", on_a_missing_gpu)
    at = forget_random(started_app(), 4323)

    def oracles():
        return [j for j in backend().jobs() if j.key.startswith("oracle:spm:") and "(seed 4323)" in j.title]

    first = oracles()
    assert len(first) == 3
    for job in first:
        job.wait(60)
    assert all(j.state == "failed" for j in first), [j.state for j in first]
    for _ in range(2):  # the redraws after the failure show it and start nothing again
        at.run()
    assert not at.exception, at.exception
    assert len(oracles()) == 3 and all(any(j is f for f in first) for j in oracles())
    failures = [e.value for e in at.error if e.value.startswith("spm oracle")]
    assert len(failures) == 3 and all("CUDA was asked for but torch sees no GPU" in e for e in failures), failures
    monkeypatch.undo()
    at.button(key=next(b.key for b in at.button if b.key.startswith("restart-oracles-spm-"))).click().run()
    restarted = [j for j in oracles() if not any(j is f for f in first)]
    assert len(restarted) == 3 and all(j.active or j.state == "done" for j in restarted), [j.state for j in oracles()]
    for job in restarted:  # what is left of the test needs no oracle: free the workers for the next tests
        job.cancel()


def jobs_sidebar_page():
    """The sidebar's job list while a load of this session runs, as on most pages and as on the Forget page."""
    import threading

    import streamlit as st

    from pages.common import backend
    from pages.sidebar import jobs_sidebar_ui
    from pages.state import session_state

    if "release" not in st.session_state:
        st.session_state["release"] = release = threading.Event()
        st.session_state["job"] = backend().run_local(f"test:slow-load:{session_state().id}", "loading a test model",
                                                      lambda progress, cancel: release.wait(60), session_state().id)
    jobs_sidebar_ui(list_loads=st.session_state.get("list_loads", True))


def test_the_forget_page_leaves_loads_out_of_the_sidebar_it_does_not_redraw():
    """Loads in this process are listed in the sidebar as they are at a full run; the Forget page reruns without
    the sidebar, so there a finished load would stay listed: app.py leaves them out there."""
    at = AppTest.from_function(jobs_sidebar_page).run()
    try:
        assert not at.exception, at.exception
        assert [c.value for c in at.sidebar.caption] == ["loading a test model"]
        at.session_state["list_loads"] = False
        at.run()
        assert not at.exception, at.exception
        assert not at.sidebar.caption and "Background work" not in [m.value for m in at.sidebar.markdown]
    finally:
        at.session_state["release"].set()
        at.session_state["job"].wait(60)


def queued_jobs_sidebar_page():
    from types import SimpleNamespace

    from core.backend import Job
    from pages.sidebar import background_work_ui

    jobs = [Job("oracle:x", "spm oracle"), Job("warm:x", "spm: predictions", local=True)]
    background_work_ui(SimpleNamespace(status="ready", jobs=lambda owner=None: jobs), "me")


def test_a_queued_job_says_what_it_waits_for():
    at = AppTest.from_function(queued_jobs_sidebar_page).run()
    assert not at.exception, at.exception
    texts = [bar.proto.text for bar in at.get("progress")]
    assert texts == ["spm oracle: queued · waiting for a worker",
                     "spm: predictions: queued · waiting for this server's previous load"], texts


def forget_ids(at: AppTest, text: str) -> AppTest:
    at.switch_page("pages/forget.py").run()
    at.radio(key="forget-kind").set_value("sample ids").run()
    at.text_area(key="forget-ids").input(text).run()
    return at.button(key="forget-go").click().run()


def test_ids_request_with_unknown_ids_is_refused():
    at = forget_ids(started_app(), "1, 2, 999999")
    assert any("999999" in e.value for e in at.error)
    assert not any(h.value.startswith("Now forgetting") for h in at.subheader)


def test_ids_listed_twice_are_forgotten_once_and_the_page_says_so():
    at = forget_ids(started_app(), "4, 7, 7\n12\n4, 7")
    assert not at.exception and not at.error
    assert [h.value for h in at.subheader if h.value.startswith("Now forgetting")] == ["Now forgetting: 3 ids"]
    assert any(c.value.startswith("3 training samples") and "3 repeated ids dropped: each id is forgotten once"
               in c.value for c in at.caption), [c.value for c in at.caption]


def test_two_sessions_forgetting_the_same_class_share_one_comparison(monkeypatch):
    from core import comparison

    computed = []
    real = comparison._compared
    monkeypatch.setattr(comparison, "_compared", lambda *a, **k: computed.append(a[-1].key()) or real(*a, **k))
    first, second = started_app(), started_app()
    for at in (first, second):
        forget_class(at, "6: 6")
        assert any("Deleted" in s.value for s in at.success)
        wait_for_jobs()
        at.switch_page("pages/predictions.py").run()
        wait_for_jobs()
        at.run()
        assert not at.exception, at.exception
    assert verdicts(first) and verdicts(first) == verdicts(second)
    assert metrics_frame(first).equals(metrics_frame(second))
    assert len(computed) == 1, computed  # one comparison against the 3 oracles, for both sessions


def test_two_sessions_do_not_see_each_others_deletions():
    first, second = started_app(), started_app()
    forget_class(first, "1: 1")
    second.switch_page("pages/predictions.py").run()
    assert any("Nothing is forgotten" in i.value for i in second.info)
    first.switch_page("pages/predictions.py").run()
    assert any("class 1" in m.value or "1 (" in m.value for m in first.markdown)
    # the original model that both sessions share still predicts class 1
    from core import bundle
    from core.data import load_dataset

    ds = load_dataset("digits")
    trained = bundle.train_or_load("spm", ds)
    assert (trained.classifier.split_proba(ds, "test").argmax(1) == 1).sum() > 0


def test_method_forms_run_in_background_and_show_in_predictions():
    from core.unlearn import get_method

    at = forget_class(started_app(), "2: 2")
    methods = at.multiselect(key="forget-methods")
    assert {"damp", "ft", "ga", "neggrad+", "rl", "l1-sparse", "scrub", "salun", "ssd"} <= {
        o.split(":")[0] for o in methods.options}
    methods.select(f"damp: {get_method('damp').description}").run()
    assert at.number_input(key="cfg-damp-samples_per_class").value > 0  # the form comes from the config
    at.button(key="forget-run-methods").click().run()
    wait_for_jobs()
    at.switch_page("pages/predictions.py").run()
    assert "damp" in at.radio(key="pred-model").options
    at.radio(key="pred-model").set_value("damp").run()
    assert not at.exception
    predictions_tab(at, "Runs and audit")
    runs = next(d.value for d in at.dataframe if "selectivity" in d.value.columns)
    damp_row = runs.set_index("run").loc["damp"]  # DAMP's own quality is tested in test_damp/test_posthoc
    assert damp_row["FA"] < 90 and damp_row["speedup"] > 1 and damp_row["selectivity"] > 0
    assert any("layer" in d.value.columns and "alpha" in d.value.columns for d in at.dataframe)
    assert damp_row["oracles"] == 3 and damp_row["verdict"].capitalize() in verdicts(at)[0]
    assert "Unlearned weights (safetensors)" in [b.proto.label for b in at.get("download_button")]
    # relearn time is measured on demand, for the unlearned network and each oracle
    predictions_tab(at, "Evidence")
    at.button(key="pred-relearn").click().run()
    assert not at.exception, at.exception
    relearn = next(d.value for d in at.dataframe if "steps" in d.value.columns)
    assert len(relearn) == 4 and relearn["model"][0] == "unlearned"
    assert any(m.value.startswith("Target: the forgotten classes' test accuracy") for m in at.markdown)
    at.button(key="pred-residue").click().run()
    assert not at.exception, at.exception
    residue = next(d.value for d in at.dataframe if "band high" in d.value.columns and "unlearned" in d.value.columns)
    assert list(residue["measure"]) == ["kNN accuracy on weight features (%)"]
    # probe decodability per layer: the original, each of the K oracles and the run
    predictions_tab(at, "Runs and audit")
    at.button(key="pred-probes").click().run()
    assert not at.exception, at.exception
    traces = [[t.get("name") for t in json.loads(c.proto.spec)["data"]] for c in at.get("plotly_chart")]
    probe = next(names for names in traces if "damp" in names)
    assert "original" in probe and sum(n.startswith("oracle ") for n in probe) == 3


def test_a_run_on_this_sessions_own_weights_stays_out_of_the_shared_runs_table(parametric_model):
    """The Models page promises that uploaded weights stay in the session: a method run on them is scored and shown
    on its Predictions page, but never lands in the runs table every session's Runs page lists."""
    from core import bundle, runs_db
    from core.data import load_dataset
    from core.unlearn import get_method
    from core.validate import checkpoint_model
    from pages import state

    digits = load_dataset("digits")
    weights = bundle.state_bytes(next(iter(parametric_model.networks().values())))
    own = checkpoint_model(weights, "parametric", digits, "mine.safetensors")
    stored_before = len(runs_db.query(status=None))
    at = started_app()
    at.session_state[state.KEY].checkpoints[f"{digits.fingerprint()}:parametric"] = own
    at = forget_class(at, "4: 4")
    at.multiselect(key="forget-methods").select(f"damp: {get_method('damp').description}").run()
    at.button(key="forget-run-methods").click().run()
    wait_for_jobs()
    at.switch_page("pages/predictions.py").run()
    at.radio(key="pred-model").set_value("damp").run()
    assert not at.exception, at.exception
    predictions_tab(at, "Runs and audit")
    runs = next(d.value for d in at.dataframe if "selectivity" in d.value.columns)
    assert runs.set_index("run").loc["damp"]["oracles"] == 3  # scored against the oracles, as a shared run is
    stored = runs_db.query(status=None)
    assert len(stored) == stored_before, stored[["method", "request_desc"]]
    at.switch_page("pages/runs.py").run()
    assert any("your own data or weights" in c.value for c in at.caption)
    # back on the shared original, the run made on the uploaded weights is not compared with it
    del at.session_state[state.KEY].checkpoints[f"{digits.fingerprint()}:parametric"]
    at.switch_page("pages/predictions.py").run()
    assert not at.exception, at.exception
    assert "damp" not in at.radio(key="pred-model").options


class Uploaded:
    """What ``st.file_uploader`` hands a page: a name and the bytes."""

    def __init__(self, name: str, data: bytes):
        self.name, self.data = name, data

    def getvalue(self) -> bytes:
        return self.data


def test_weights_unlearned_elsewhere_are_judged_on_the_predictions_page_in_this_session_only(monkeypatch,
                                                                                            parametric_model):
    """An auditor uploads weights another tool unlearned (AppTest cannot drive a file uploader: the page's call of it
    hands over the file, the rest of the page runs as is): a damaged file is named and refused, the real one is
    judged against the request's three oracles as the DAMP run that made it is, shown with its file name and hash,
    and kept out of the runs table every session lists."""
    import hashlib

    import streamlit as st

    from core import bundle, runs_db, workflow
    from core.data import load_dataset, request_classes

    digits = load_dataset("digits")
    request = request_classes(digits, [3])
    original = workflow.original("parametric", digits)
    damp = workflow.execute("damp", original, digits, request)
    data = bundle.state_bytes(next(iter(damp.model.networks().values())))
    offered = {"file": Uploaded("broken.safetensors", data[:-9])}
    real = st.file_uploader
    monkeypatch.setattr(st, "file_uploader", lambda label, *a, key=None, **kw: offered["file"]
                        if key == "pred-supplied-file" else real(label, *a, key=key, **kw))
    stored_before = len(runs_db.query(status=None))
    at = forget_class(started_app(), "3: 3")
    at.switch_page("pages/predictions.py").run()
    at = predictions_tab(at, "Runs and audit")
    at.button(key="pred-supplied-go").click().run()
    assert any(e.value.startswith("These weights were not judged: broken.safetensors") for e in at.error)
    offered["file"] = Uploaded("vendor.safetensors", data)
    at.button(key="pred-supplied-go").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="pred-model").value == "supplied (vendor.safetensors)"  # shown at once
    wait_for_jobs()  # the parametric oracles of class 3
    at.run()
    sha = hashlib.sha256(data).hexdigest()
    assert any("**vendor.safetensors**" in i.value and sha in i.value for i in at.info)
    runs = next(d.value for d in at.dataframe if "selectivity" in d.value.columns).set_index("run")
    judged = workflow.score(damp, original, workflow.oracles("parametric", digits, request, 3), digits)
    row = runs.loc["supplied (vendor.safetensors)"]
    assert row["oracles"] == 3 and row["verdict"] == judged.comparison.verdict
    assert row["FA"] == pytest.approx(judged.comparison.metrics["FA"], abs=1e-6)
    assert len(runs_db.query(status=None)) == stored_before  # the user's file is not in the shared table
    at = predictions_tab(at, "Metrics")
    assert next(m.value for m in at.metric if m.label == "Unlearning time") == "not measured"
    for tab in ("Evidence", "What changed"):
        assert not predictions_tab(at, tab).exception, tab
    at.switch_page("pages/embeddings.py").run()
    assert "supplied (vendor.safetensors)" in at.selectbox(key="emb-model").options and not at.exception
    at.switch_page("pages/predictions.py").run()  # coming back shows the model picked before, not the first
    assert at.radio(key="pred-model").value == "supplied (vendor.safetensors)" and not at.exception


def test_a_finished_run_is_listed_on_the_runs_page_without_a_visit_to_the_predictions_page(parametric_model):
    """A run made for an earlier request of the session (the user forgot something else since) is scored against its
    oracles and stored when the Runs page opens: a user who goes straight there finds it."""
    from core import runs_db
    from core.unlearn import get_method

    at = started_app()
    at = forget_class(at, "6: 6")
    at.multiselect(key="forget-methods").select(f"damp: {get_method('damp').description}").run()
    at.button(key="forget-run-methods").click().run()
    wait_for_jobs()
    at = forget_class(at, "8: 8")  # a later request: the Predictions page would score only this one
    at.switch_page("pages/runs.py").run()
    assert not at.exception, at.exception
    stored = runs_db.query(status=None)
    row = stored[(stored["method"] == "damp") & (stored["request_desc"] == "class 6 (6)")]
    assert len(row) == 1 and row["oracle_k"].iloc[0] == 3, stored[["method", "request_desc", "oracle_k"]]
    assert "damp" in at.dataframe[0].value["method"].tolist()


def test_the_forget_pages_pickers_and_method_settings_stay_set_after_another_page():
    from core.unlearn import get_method

    at = started_app()
    at.switch_page("pages/forget.py").run()
    at.radio(key="forget-kind").set_value("random fraction").run()
    at.slider(key="forget-fraction").set_value(20).run()
    at.number_input(key="forget-seed").set_value(7).run()
    at.switch_page("pages/runs.py").run()
    at.switch_page("pages/forget.py").run()
    assert not at.exception, at.exception
    assert at.radio(key="forget-kind").value == "random fraction"
    assert (at.slider(key="forget-fraction").value, at.number_input(key="forget-seed").value) == (20, 7)
    at = forget_class(at, "2: 2")
    at.multiselect(key="forget-methods").select(f"damp: {get_method('damp').description}").run()
    samples = at.number_input(key="cfg-damp-samples_per_class").value + 1
    at.number_input(key="cfg-damp-samples_per_class").set_value(samples).run()
    at.switch_page("pages/runs.py").run()
    at.switch_page("pages/forget.py").run()
    assert not at.exception, at.exception
    assert at.multiselect(key="forget-classes").value == [2]
    assert at.multiselect(key="forget-methods").value == ["damp"]
    assert at.number_input(key="cfg-damp-samples_per_class").value == samples


def test_a_pick_waits_for_forget_and_add_to_what_is_forgotten_merges_the_requests():
    """The pickers are a fragment of their own: what they say becomes the request when Forget is clicked."""
    def heading(at: AppTest) -> str:
        return next(h.value for h in at.subheader if h.value.startswith("Now forgetting"))

    at = forget_class(started_app(), "1: 1")
    assert heading(at) == "Now forgetting: class 1 (1)"
    at.multiselect(key="forget-classes").unselect(1).select("3: 3").run()
    assert heading(at) == "Now forgetting: class 1 (1)" and not at.exception
    at.checkbox(key="forget-add").check().run()
    at.button(key="forget-go").click().run()
    assert heading(at) == "Now forgetting: classes 1 (1), 3 (3)", heading(at)
    at.checkbox(key="forget-add").uncheck().run()
    at.button(key="forget-go").click().run()
    assert heading(at) == "Now forgetting: class 3 (3)" and not at.exception
    at.button(key="forget-undo").click().run()
    assert heading(at) == "Now forgetting: classes 1 (1), 3 (3)"


def test_a_dataset_that_cannot_load_leaves_a_clear_message_and_the_upload(monkeypatch):
    import pages.common
    from core.data import DataError
    from pages import state

    def broken(name):
        raise DataError(f"{name}: no files found (test)")

    monkeypatch.setattr(pages.common, "load_dataset", broken)
    pages.common.cached_dataset.clear()  # another test of this process may have loaded mnist-5k
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[state.KEY] = state.SessionState(dataset_name="mnist-5k")
    at.run()
    assert not at.exception
    assert any("no files found" in e.value for e in at.sidebar.error)
    assert any("No dataset is loaded" in w.value for w in at.warning)
    assert any(e.label == "Use your own data" for e in at.expander)
    at.switch_page("pages/forget.py").run()
    assert any("No dataset is loaded" in w.value for w in at.warning) and not at.exception


def test_any_page_opened_first_loads_stored_models_and_offers_to_train_the_others(monkeypatch, spm_model):
    """A bookmark to the Forget page must work without the Models page: stored models load there, and a model
    that is not stored gets a Train button (here no job ever runs: a backend that never starts Ray)."""
    import pages.common
    from core import bundle
    from core.backend import Backend

    idle = Backend()
    monkeypatch.setattr(idle, "start", lambda *a, **k: idle)
    monkeypatch.setattr(pages.common, "backend", lambda: idle)
    stored = bundle.is_available
    monkeypatch.setattr(bundle, "is_available", lambda kind, *a, **k: kind != "munkey" and stored(kind, *a, **k))
    at = forget_class(AppTest.from_file(APP, default_timeout=120).run(), "0: 0")
    assert not at.exception
    assert any("Deleted" in s.value and "no weight changed" in s.value for s in at.success)  # SPM, loaded here
    assert any("munkey is not trained for this dataset yet" in c.value for c in at.caption)
    at.button(key="forget-train-munkey").click().run()
    job = next(j for j in idle.jobs() if j.key.startswith("model:munkey:"))
    assert job.state == "queued" and job.title == "munkey on digits"
    assert not any(b.key == "forget-train-munkey" for b in at.button)
    idle.shutdown()


def test_embeddings_page_selection_forget_and_one_sample(spm_model, digits):
    """The map in PCA, a selection (as a lasso leaves it in the session state) shown and forgotten, and the
    selected sample explained with SPM's prototype scores and each model's neighbours."""
    from pages.state import KEY

    at = started_app()
    at.session_state["emb-layout"] = "PCA"  # UMAP would compile in a Ray worker for a minute
    at.switch_page("pages/embeddings.py").run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("PCA layout:") for c in at.caption)
    assert any(s.value == "Selection: 0 samples" for s in at.subheader)
    state = at.session_state[KEY]
    state.embeddings.selection = ["train:0", "train:5", "test:3"]
    at.session_state[KEY] = state
    at.run()
    assert any(s.value == "Selection: 3 samples" for s in at.subheader)
    at.button(key="emb-forget").click().run()
    assert not at.exception, at.exception
    assert any("Now forgetting **2 ids" in s.value for s in at.success)
    assert at.session_state[KEY].deletions_for(digits).current.ids == (0, 5)
    assert any("changed after unlearning" in c.value for c in at.caption)
    at.selectbox(key="emb-focus").set_value("test:3").run()
    assert not at.exception, at.exception
    assert any("SPM prototype scores" in m.value for m in at.markdown)
    assert {"original", "unlearned"} <= {m.value.split(", ")[1].split(" model")[0] for m in at.markdown
                                         if m.value.startswith("**Nearest training samples")}
    at.button(key="emb-clear").click().run()
    assert any(s.value == "Selection: 0 samples" for s in at.subheader)
    colour = at.selectbox(key="emb-colour").options[-1]
    at.selectbox(key="emb-colour").set_value(colour).run()
    at.switch_page("pages/forget.py").run()
    at.switch_page("pages/embeddings.py").run()  # the pickers show what they showed before
    assert at.selectbox(key="emb-colour").value == colour and at.radio(key="emb-layout").value == "PCA"
    assert not at.exception, at.exception



def test_recorded_oracles_compare_at_once_and_the_real_ones_train_on_demand(monkeypatch, tmp_path, digits, spm_model):
    """Oracles recorded but not trained (as on a fresh clone with assets/oracles): the Forget page takes them at once
    and starts no training, Predictions gives the verdict on them and says so, and a button trains the real oracles
    for the measures that read weights; once trained, they replace the recorded ones."""
    import shutil

    from conftest import FAST

    from core import bundle, recorded, store, workflow
    from core.data import request_classes

    monkeypatch.setattr(recorded, "record_dirs", lambda: [tmp_path])
    recorded.load.cache_clear()
    request = request_classes(digits, [5])
    for oracle in workflow.oracles("spm", digits, request, k=3, train_config=FAST):
        recorded.record(oracle, digits, tmp_path)
        shutil.rmtree(store.home() / "models" / oracle.key)
        bundle._MEMO.pop(oracle.key, None)
    at = forget_class(started_app(), "5: 5")
    assert not at.exception, at.exception
    (ready,) = [c.value for c in at.caption if c.value.startswith("spm oracles ready, 3 of 3")]
    assert ready.count("its predictions recorded") == 3, ready
    def trained_oracle_jobs():
        return [j for j in backend().jobs() if j.key.startswith("oracle:spm:") and "without class 5" in j.title]

    assert not trained_oracle_jobs()
    at.switch_page("pages/predictions.py").run()
    wait_for_jobs()
    at.run()
    assert not at.exception, at.exception
    (sentence,) = verdicts(at)
    assert "3 oracles" in sentence, sentence
    assert any(c.value.startswith("Oracles: 3 of 3 finished") and "All of them are recorded" in c.value
               for c in at.caption)
    predictions_tab(at, "Evidence")
    assert not [b for b in at.button if b.key == "pred-residue"]  # it reads weights: not on recorded oracles
    at.switch_page("pages/embeddings.py").run()  # the oracle's map needs weights too: offered, not started
    assert not at.exception, at.exception
    assert not trained_oracle_jobs() and [b for b in at.button if b.key == "emb-train-oracle"]
    at.switch_page("pages/predictions.py").run()
    at.button(key="pred-train-oracles").click().run()
    assert len(trained_oracle_jobs()) == 3, [j.title for j in backend().jobs()]
    wait_for_jobs()
    at.run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("Oracles: 3 of 3 finished") and "recorded" not in c.value for c in at.caption)
    assert [b for b in at.button if b.key == "pred-residue"]
    recorded.load.cache_clear()


def oracle_jobs_page():
    """Three oracles of one model as the Forget page draws them: one trained, two queued with one estimate (the
    first of them asked for by another session too)."""
    from types import SimpleNamespace

    import streamlit as st

    from core.backend import Job
    from pages.widgets import oracle_jobs_ui

    if "jobs" not in st.session_state:
        cancelled = st.session_state["cancelled"] = []
        done = Job("o1", "oracle 1")
        done._finish("done", result=SimpleNamespace(classifier=None, meta={"train_config": {"seed": 1},
                                                                           "train_log": {"train_s": 12.0}}))
        queued = [Job(f"o{i}", f"oracle {i}", expected_s=150.0, expected_from="the stored original's training")
                  for i in (2, 3)]
        slow = st.session_state.get("slow_cancel", False)  # a Ray task takes a moment to stop
        for i, job in enumerate(queued, 2):
            job._cancel = lambda i=i, job=job: cancelled.append(i) or (None if slow else job._finish("cancelled"))
        queued[0].owners.add("another session")
        st.session_state["jobs"] = [done, *queued]
    oracle_jobs_ui("spm", st.session_state["jobs"], "test")


def test_the_oracles_still_going_share_one_bar_with_their_estimate_and_one_cancel():
    at = AppTest.from_function(oracle_jobs_page).run()
    assert not at.exception, at.exception
    assert [c.value for c in at.caption] == ["spm oracles ready, 1 of 3: #1 seed 1, trained (12 s of training)."]
    (bar,) = at.get("progress")
    assert bar.proto.text == ("spm oracles still going, 2 of 3: #2, #3 queued (about 2.5 min once started, judging by "
                              "the stored original's training)")
    (cancel,) = [b for b in at.button if b.key == "cancel-oracles-test"]
    cancel.click().run()
    assert not at.exception, at.exception
    assert at.session_state["cancelled"] == [3]  # #2 goes on for the other session; the finished #1 is untouched
    assert "spm oracle #2: cancelled here; it goes on for another session that asked for it too." in \
        [c.value for c in at.caption]
    assert [w.value for w in at.warning] == ["spm oracle #3 was cancelled."]
    assert not at.get("progress") and not [b for b in at.button if b.key == "cancel-oracles-test"]
    at.button(key="restart-oracles-test").click().run()
    assert not at.exception, at.exception
    (bar,) = at.get("progress")  # this session follows #2 again (restarting #3 is the Forget page's next redraw)
    assert bar.proto.text.startswith("spm oracles still going, 1 of 3: #2 queued")


def test_an_oracle_cancelled_here_reads_stopping_until_it_has_stopped():
    at = AppTest.from_function(oracle_jobs_page)
    at.session_state["slow_cancel"] = True
    at.run()
    at.button(key="cancel-oracles-test").click().run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption]
    assert "spm oracle #3: stopping." in captions  # not "goes on for another session": none asked for it
    assert "spm oracle #2: cancelled here; it goes on for another session that asked for it too." in captions
    at.session_state["jobs"][2]._finish("cancelled")
    at.run()
    assert [w.value for w in at.warning] == ["spm oracle #3 was cancelled."]
    assert "spm oracle #3: stopping." not in [c.value for c in at.caption]


def ends_while_drawn_page():
    """A page that draws a job still going, which ends before the page's poll (a stored model loads that fast)."""
    import streamlit as st

    from core.backend import Job
    from pages.widgets import job_status_ui, poll_while_active

    job = st.session_state.setdefault("job", Job("load", "loading spm"))
    if job_status_ui(job, "spm"):
        st.success("spm ready")
    elif not st.session_state.get("ended"):
        st.session_state["ended"] = True
        job.report(0.99, "loading spm from the assets")
        job._finish("done", result="model")
    poll_while_active([job])


def test_a_job_that_ends_while_its_page_is_drawn_is_redrawn_ended():
    at = AppTest.from_function(ends_while_drawn_page).run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["spm ready"] and not at.get("progress")


def starts_while_drawn_page():
    """A page that draws an oracle queued for a worker, which starts on one before the page's poll."""
    import streamlit as st

    from core.backend import Job
    from pages.widgets import job_status_ui, poll_while_active

    job = st.session_state.setdefault("job", Job("oracle", "spm oracle", expected_s=900.0, message="queued"))
    job_status_ui(job, "spm oracle")
    if not st.session_state.get("started"):
        st.session_state["started"] = True
        job.report(0.01, "epoch 1 of 30")
    poll_while_active([job])


def test_an_oracle_drawn_queued_that_starts_is_redrawn_running():
    """A Forget click redraws only its fragment: without this, its oracles read "queued" until one ended (minutes),
    and the sidebar, redrawn only by a full run, did not list them at all."""
    at = AppTest.from_function(starts_while_drawn_page).run()
    assert not at.exception, at.exception
    assert [p.proto.text for p in at.get("progress")] == ["spm oracle: epoch 1 of 30 (about 15.0 min left)"]


def test_a_page_looks_at_its_jobs_less_often_while_they_have_minutes_left():
    from core.backend import Job
    from pages.widgets import PROGRESS_REFRESH_S, SLOWEST_REFRESH_S, refresh_seconds

    def job(local=False, expected_s=None):
        return Job("k", "t", local=local, expected_s=expected_s)

    oracle = job(expected_s=900.0)  # queued, ~15 min once started
    assert refresh_seconds([oracle]) == SLOWEST_REFRESH_S
    assert refresh_seconds([job(expected_s=20.0)]) == 5.0  # a quarter of what is left
    assert refresh_seconds([oracle, job()]) == PROGRESS_REFRESH_S  # an end not known: as often as ever
    assert refresh_seconds([oracle, job(local=True, expected_s=900.0)]) == PROGRESS_REFRESH_S  # a load here
    stopping = job(expected_s=900.0)
    stopping.cancel()  # it ends within seconds: the page shows that as soon as it has
    assert refresh_seconds([oracle, stopping]) == PROGRESS_REFRESH_S
    oracle._finish("done")
    assert refresh_seconds([oracle]) == PROGRESS_REFRESH_S  # nothing going
