"""The Ray backend against a real local Ray instance: round trip, progress, cancel, killed workers, bad address."""

import os
import re
import signal
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
from ray import cloudpickle

from core import bundle, runs_db, store, workflow
from core.backend import Backend, BackendError, Task
from core.configs import config_to_dict
from core.data import request_classes, request_ids

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module by name


def counting(steps: int, pause: float, progress=None):
    for i in range(steps):
        progress((i + 1) / steps, f"step {i + 1} of {steps} in pid {os.getpid()}")
        time.sleep(pause)
    return steps


def failing(progress=None):
    raise ValueError("the input was wrong")


def thread_niceness(progress=None):
    """The nice value of every thread of the worker running this task (torch's pool started first)."""
    import torch

    torch.ones(64, 64) @ torch.ones(64, 64)
    return sorted({os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")})


def ray_moves_here() -> bool:
    """Whether the hook moves a local Ray to a scheduling group of its own on this machine: this process is in an
    autogroup (a process of the boot session, such as a CI runner's, is in none and reads an empty file) whose
    niceness the kernel lets it set."""
    from core import backend

    return backend.settable_group_nice() is not None


def scheduling_group(progress=None):
    """The scheduling group (autogroup) of the worker running this task and its nice value."""
    group, _, nice = open("/proc/self/autogroup").read().split()
    return group, int(nice)


def wait_until(predicate, timeout: float = 60.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_model_trained_on_a_worker_with_an_empty_home_lands_in_the_drivers_store(ray_backend, digits):
    from core.models.training import TrainConfig

    tc = TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=23)  # a recipe no other test trains
    key = bundle.resolve("parametric", digits, train_config=tc)[2]
    assert store.find_model(key) is None
    job = ray_backend.submit("rt-train", "parametric", workflow.train_remote("parametric", digits, train_config=tc))
    job.wait(300)
    assert job.state == "done", job.error
    assert job.result.key == key and store.find_model(key) is not None  # written here, by the driver
    assert job.result.meta["test_acc"] > 50 and job.result.meta["weights_sha256"]
    assert os.environ["UE_HOME"] not in ray_backend.worker_env["UE_HOME"]


def test_progress_reaches_the_driver_and_jobs_are_shared_by_key(ray_backend):
    job = ray_backend.submit("progress", "count", Task(counting, (6, 0.4)), owner="session-a")
    assert wait_until(lambda: 0 < job.progress < 1, 60), (job.state, job.message)
    assert job.state == "running" and "step" in job.message
    again = ray_backend.submit("progress", "count", Task(counting, (6, 0.4)), owner="session-b")
    assert again is job and job.owners == {"session-a", "session-b"}
    assert job.wait(60) == 6 and job.state == "done" and job.progress == 1.0
    assert [j.key for j in ray_backend.jobs(owner="session-a")] == ["progress"]
    assert "progress" not in [j.key for j in ray_backend.jobs(owner="session-c")]


def test_training_yields_the_cpu_to_the_pages(ray_backend):
    from core.job import DEFAULT_WORKER_NICE

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    job = ray_backend.submit("nice", "niceness", Task(thread_niceness))
    levels = job.wait(60)
    assert levels and min(levels) >= max(mine, DEFAULT_WORKER_NICE), (levels, job.error)  # no thread above it
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine  # the driver (the app's process) keeps its priority
    if ray_moves_here():  # and, where nice orders one group only, its own group
        group, nice = ray_backend.submit("group", "scheduling group", Task(scheduling_group)).wait(60)
        assert group != open("/proc/self/autogroup").read().split()[0] and nice >= DEFAULT_WORKER_NICE


def test_a_local_ray_runs_below_the_pages_and_its_monitor_does_not(ray_backend):
    """Ray's own processes (GCS, raylet) start from a thread at the workers' niceness, in a scheduling group of
    their own where the kernel has them, so a busy Ray never takes the CPU from a page; the monitor thread, which
    holds the GIL while it submits, keeps the pages' priority."""
    from core.job import worker_nice

    assert ray_backend.status == "ready"
    children = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            name = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid: started by this process
            children.append((int(pid), name, int(fields[16])))  # nice
    ray_children = [(pid, name, nice) for pid, name, nice in children if name in ("gcs_server", "raylet")]
    assert len(ray_children) == 2, children
    assert all(nice >= worker_nice() for _, _, nice in ray_children), ray_children
    if ray_moves_here():  # nice orders only one scheduling group: Ray is in its own
        mine = open("/proc/self/autogroup").read().split()[0]
        for pid, name, _ in ray_children:
            group, _, nice = open(f"/proc/{pid}/autogroup").read().split()
            assert group != mine and int(nice) >= worker_nice(), (name, group, nice, mine)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, ray_backend._thread.native_id) == mine < worker_nice()


def test_ray_moves_only_where_the_kernel_lets_this_process_set_its_own_groups_niceness(monkeypatch):
    """Ray in a group of its own at nice 0 would compete with the pages as an equal, and a process outside any
    autogroup has no group to leave: in both cases, no move. Where it moves, its group is never above the pages'."""
    from ray._private import services

    from core import backend

    started, asked = services.ConsolePopen, []

    def answering(took: bool):
        def set_group_nice(pid: int, nice: int, tries: int = 20) -> bool:
            asked.append((pid, nice))
            return took

        return set_group_nice

    monkeypatch.setattr(backend, "set_group_nice", answering(True))
    for pages, ray in ((5, 10), (15, 15)):
        monkeypatch.setattr(backend, "group_nice", lambda pid, pages=pages: pages)
        asked.clear()
        with backend.own_scheduling_group(10):
            process = services.ConsolePopen(["sleep", "5"])
            try:
                assert os.getsid(process.pid) == process.pid != os.getsid(0)  # a session of its own
            finally:
                process.kill()
                process.wait()
        assert services.ConsolePopen is started
        assert asked == [(os.getpid(), pages), (process.pid, ray)]  # the probe (its own group, as it was), then Ray's

    monkeypatch.setattr(backend, "set_group_nice", answering(False))
    asked.clear()
    with backend.own_scheduling_group(10):
        assert services.ConsolePopen is started  # refused: Ray stays in the pages' group
    assert asked == [(os.getpid(), 15)]

    monkeypatch.setattr(backend, "group_nice", lambda pid: None)  # this process is in no autogroup
    asked.clear()
    with backend.own_scheduling_group(10):
        assert services.ConsolePopen is started
    assert asked == []


def test_a_bad_worker_niceness_fails_the_local_start_instead_of_hanging_it(monkeypatch):
    from core.backend import init_below_pages

    class NeverCalled:
        def init(self, **options):
            raise AssertionError("ray.init must not run with a bad UE_WORKER_NICE")

    monkeypatch.setenv("UE_WORKER_NICE", "high")
    with pytest.raises(ValueError, match="UE_WORKER_NICE must be a whole number from 0 to 19, found 'high'"):
        init_below_pages(NeverCalled())


def test_the_app_starts_ray_at_its_first_visitor_unless_told_to_wait(monkeypatch):
    import pages.common

    started = []
    monkeypatch.setattr(Backend, "start", lambda self, *a, **k: started.append(self) or self)
    for lazy, expected in ((None, 1), ("1", 0)):
        if lazy is None:
            monkeypatch.delenv("UE_RAY_LAZY", raising=False)
        else:
            monkeypatch.setenv("UE_RAY_LAZY", lazy)
        started.clear()
        engine = pages.common.backend.__wrapped__()  # the function behind st.cache_resource: a new backend
        assert len(started) == expected and (not started or started[0] is engine)


def test_a_bad_worker_niceness_is_named(monkeypatch):
    from core.job import DEFAULT_WORKER_NICE, worker_nice

    monkeypatch.delenv("UE_WORKER_NICE", raising=False)
    assert worker_nice() == DEFAULT_WORKER_NICE
    monkeypatch.setenv("UE_WORKER_NICE", "5")
    assert worker_nice() == 5
    for bad in ("high", "-3", "25"):
        monkeypatch.setenv("UE_WORKER_NICE", bad)
        with pytest.raises(ValueError, match=f"UE_WORKER_NICE must be a whole number from 0 to 19, found '{bad}'"):
            worker_nice()


def test_a_failing_task_keeps_its_cause(ray_backend):
    job = ray_backend.submit("fails", "fails", Task(failing))
    job.wait(60)
    assert job.state == "failed" and "ValueError: the input was wrong" in job.error


def test_cancel_stops_a_running_task_and_nothing_is_finalized(ray_backend):
    stored = []
    job = ray_backend.submit("cancel-me", "slow", Task(counting, (200, 0.1), finalize=stored.append))
    assert wait_until(lambda: job.state == "running" and job.progress > 0, 60)
    start = time.perf_counter()
    job.cancel()
    job.wait(30)
    assert job.state == "cancelled" and time.perf_counter() - start < 10
    time.sleep(0.5)
    assert stored == []


def test_a_released_job_stops_only_when_no_session_still_asks_for_it(ray_backend):
    stored = []
    job = ray_backend.submit("released", "slow", Task(counting, (200, 0.1), finalize=stored.append), owner="a")
    assert ray_backend.submit("released", "slow", Task(counting, (200, 0.1)), owner="b") is job  # shared
    assert wait_until(lambda: job.state == "running" and job.progress > 0, 60)
    assert ray_backend.release(job, "a") is False  # b still asks for it
    assert job.active and job.owners == {"b"}
    assert ray_backend.release(job, "b") is True
    job.wait(30)
    assert job.state == "cancelled" and stored == []
    done = ray_backend.add_done("released-done", "done", 1, owner="a")
    assert ray_backend.release(done, "a") is False and done.state == "done"  # a finished job stays


def test_a_killed_worker_is_retried_once_then_the_job_fails_with_the_cause(ray_backend):
    stored = []
    job = ray_backend.submit("killed", "slow", Task(counting, (400, 0.05), finalize=stored.append))
    pids = []
    for _ in range(2):
        assert wait_until(lambda: not job.active or ("pid" in job.message and
                                                     int(job.message.split()[-1]) not in pids), 60)
        if not job.active:
            break
        pid = int(job.message.split()[-1])
        pids.append(pid)
        os.kill(pid, signal.SIGKILL)
    job.wait(60)
    assert len(pids) == 2, "the first kill must be retried on a new worker"
    assert job.state == "failed" and "worker process died" in job.error
    assert stored == []
    assert ray_backend.submit("after-kill", "count", Task(counting, (2, 0.0))).wait(60) == 2  # still works


def test_a_method_run_on_a_worker_is_scored_and_recorded_here(ray_backend, digits, parametric_model):
    request = request_classes(digits, [1])
    original = workflow.original("parametric", digits, allow_train=False)
    oracle = ray_backend.submit("oracle-1", "oracle", workflow.train_remote("parametric", digits, request, 1))
    run_job = ray_backend.submit("ft-1", "ft", workflow.method_remote("ft", original, digits, request))
    run, oracle_model = run_job.wait(300), oracle.wait(300)
    assert run_job.state == "done" and oracle.state == "done", (run_job.error, oracle.error)
    assert run.model is not original.classifier and run.weights_sha256
    for model in (run.model, oracle_model.classifier):  # evaluated on the worker, the same as predicting here
        worker_probs = model.__dict__["_split_proba"][(digits.fingerprint(), "test")]
        np.testing.assert_allclose(worker_probs, model.predict_proba(digits.x_test), atol=1e-5)
    key = workflow.record(workflow.score(run, original, [oracle_model], digits), digits, seed=0)
    row = runs_db.get(key)
    assert row.method == "ft" and row.request_kind == "class" and row.metrics["RA"] > 80
    assert row.weights_sha256 == run.weights_sha256
    assert row.oracle_k == 1 and row.oracle_seeds == [1] and row.verdict == "inconclusive"  # one oracle: no spread


def test_an_unreachable_cluster_address_is_named_within_seconds():
    engine = Backend(address="127.0.0.1:1")
    start = time.perf_counter()
    with pytest.raises(BackendError) as err:
        engine.start(wait=True, timeout=30)
    assert time.perf_counter() - start < 30
    assert "127.0.0.1:1" in str(err.value) and "unset UE_RAY_ADDRESS" in str(err.value)
    job = engine.submit("x", "x", Task(counting, (1, 0.0)))
    assert job.state == "failed" and "127.0.0.1:1" in job.error


def test_the_job_table_keeps_only_the_newest_finished_model_jobs(monkeypatch):
    from core import backend as B

    monkeypatch.setattr(B, "KEEP_FINISHED", 2)
    engine = B.Backend()
    try:
        for i in range(4):
            engine.run_local(f"model:test:{i}", "m", lambda progress, cancel, i=i: i).wait(30)
        run = engine.run_local("run:test", "a method run", lambda progress, cancel: "kept").wait(30)
        assert run == "kept"
        keys = [j.key for j in engine.jobs()]
        assert "run:test" in keys  # not reloadable from the store: never dropped
        assert len([k for k in keys if k.startswith("model:")]) <= 2 and "model:test:3" in keys
    finally:
        engine.shutdown()


def test_the_model_memo_keeps_originals_and_only_recent_oracles(monkeypatch):
    from core import bundle

    monkeypatch.setattr(bundle, "MEMO_ORACLES", 1)
    monkeypatch.setattr(bundle, "_MEMO", bundle.OrderedDict())
    bundle.remember(bundle.TrainedModel("original", None, {"excluded": None}))
    for i in range(3):
        bundle.remember(bundle.TrainedModel(f"oracle-{i}", None, {"excluded": {"ids": [i]}}))
    assert list(bundle._MEMO) == ["original", "oracle-2"]


def test_eta_extrapolates_progress_or_falls_back_on_the_estimate():
    from core.job import Job

    job = Job("k", "oracle", expected_s=120.0)
    assert job.eta == 120.0  # queued: the estimate
    job.report(0.01, "step 1")  # running, too little progress to extrapolate
    job.started -= 30
    assert 89 <= job.eta <= 91
    job.report(0.5, "half")
    assert 29 <= job.eta <= 31  # extrapolated from its own progress
    assert Job("k", "no estimate").eta is None


def test_an_oracle_job_is_estimated_from_the_stored_original(digits, parametric_model):
    request = request_classes(digits, [0])
    original = bundle.train_or_load("parametric", digits)
    expected = bundle.expected_train_seconds("parametric", digits, excluded=request)
    kept = 1 - len(request.ids) / digits.num_train
    assert expected == pytest.approx(original.meta["train_log"]["train_s"] * kept)
    assert bundle.expected_train_seconds("parametric", digits, train_config=replace(bundle.recipe("digits"),
                                                                                   epochs=99)) is None


def test_a_queued_oracle_is_estimated_from_its_siblings_running_rather_than_the_stored_original():
    """The stored original's time was measured on whichever machine trained it (985 s for the shipped SPM, where
    its oracles train in about 2.5 min here): once a sibling oracle's progress says enough, a queued one's estimate
    is that sibling's time so far over its progress. An estimate measured on this backend stays."""
    from core.job import Job

    def queued(expected_from):
        return Job(f"q-{expected_from}", "oracle", expected_s=900.0, expected_from=expected_from)

    running, early = Job("r1", "oracle #1"), Job("r2", "oracle #2")
    running.report(0.2, "epoch 2 of 8")
    running.started -= 30.0  # 30 s for a fifth: about 150 s in all
    early.report(0.01, "step 1")  # too little progress to say anything
    stored, measured = queued(workflow.STORED_ORIGINAL), queued("the last one trained here")
    workflow.estimate_from_siblings([early, stored, None, measured])
    assert stored.expected_s == 900.0  # no sibling has said enough yet
    workflow.estimate_from_siblings([running, early, stored, None, measured])
    assert stored.expected_s == pytest.approx(150.0, rel=0.01) and stored.expected_from == workflow.SIBLINGS_RUNNING
    assert measured.expected_s == 900.0 and running.eta == pytest.approx(120.0, rel=0.01)
    assert stored.eta == pytest.approx(150.0, rel=0.01)


def test_a_queued_oracle_is_estimated_from_the_latest_one_trained_on_this_backend(digits):
    """Once an oracle of the recipe has trained on this backend's workers, a queued one's estimate is that
    oracle's own start-to-finish time (scaled by the samples kept), not the stored original's."""
    from core.job import Job

    engine = Backend()
    request, other = request_classes(digits, [0]), request_classes(digits, [1, 2])
    assert workflow.measured_train_seconds(engine, "parametric", digits, None, None, request) is None
    done = Job("oracle:parametric:x", "oracle")
    tc = workflow.oracle_train_config("parametric", digits, 2)
    config = bundle.resolve("parametric", digits)[0]
    done.result = bundle.TrainedModel("x", None, {
        "kind": "parametric", "config": config_to_dict(config), "train_config": config_to_dict(tc),
        "dataset_fingerprint": digits.fingerprint(), "num_train_ids": digits.num_train - len(other.ids)})
    done.started = time.time() - 50.0
    done._finish("done", done.result)
    engine._jobs[done.key] = done
    kept = digits.num_train - len(request.ids)
    expected = workflow.measured_train_seconds(engine, "parametric", digits, None, None, request)
    assert expected == pytest.approx(50.0 * kept / (digits.num_train - len(other.ids)), rel=0.01)
    longer = replace(bundle.recipe("digits", "parametric"), epochs=99)  # another recipe: no measurement
    assert workflow.measured_train_seconds(engine, "parametric", digits, None, longer, request) is None
    done.local = True  # loaded here, not trained on a worker: not a measurement
    assert workflow.measured_train_seconds(engine, "parametric", digits, None, None, request) is None


def test_the_trainings_a_session_may_have_going_is_named(monkeypatch):
    from core.backend import DEFAULT_SESSION_TRAININGS, session_training_cap
    from core.errors import InputError

    monkeypatch.delenv("UE_SESSION_TRAININGS", raising=False)
    assert session_training_cap() == DEFAULT_SESSION_TRAININGS == 16
    monkeypatch.setenv("UE_SESSION_TRAININGS", "0")  # no limit
    assert session_training_cap() == 0
    for bad in ("many", "-2", "1.5"):
        monkeypatch.setenv("UE_SESSION_TRAININGS", bad)
        with pytest.raises(InputError, match=f"UE_SESSION_TRAININGS must be a whole number \\(0: no limit\\), "
                                             f"found '{re.escape(bad)}'"):
            session_training_cap()


def test_without_train_a_model_job_loads_a_stored_model_but_sends_none_to_train(digits, parametric_model):
    """What a session with its share of trainings going asks for: stored models still load, nothing trains."""
    from core.job import Job

    class NoTraining(Backend):
        def submit(self, *args, **kwargs) -> Job:
            raise AssertionError("sent to train")

    engine, request = NoTraining(), request_ids(digits, [5, 8, 13])  # no other test trains its oracles
    assert workflow.model_job(engine, "parametric", digits, request, 7, owner="s", train=False) is None
    assert workflow.oracle_jobs(engine, "parametric", digits, request, owner="s", train=False) == [None] * 3
    loaded = workflow.model_job(engine, "parametric", digits, owner="s", train=False)  # the stored original
    assert loaded is not None and loaded.local and loaded.wait(60) and loaded.finished_ok
    assert engine.trainings("s") == []  # a load in this process is not one of the session's trainings
