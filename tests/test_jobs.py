"""Background jobs: progress, sharing by key, failure messages and cancellation that saves nothing."""

import threading

from core.jobs import JobRunner


def test_job_reports_progress_and_result():
    runner = JobRunner()
    seen = []

    def work(progress, cancel):
        for i in range(3):
            progress((i + 1) / 3, f"step {i}")
            seen.append(i)
        return 42

    job = runner.submit("a", "test", work)
    assert job.wait(10) == 42 and job.state == "done" and job.progress == 1.0
    assert runner.submit("a", "again", work) is job  # same key: shared, not rerun
    assert seen == [0, 1, 2]


def test_failure_keeps_the_message():
    runner = JobRunner()
    job = runner.submit("b", "test", lambda p, c: 1 / 0)
    job.wait(10)
    assert job.state == "failed" and "ZeroDivisionError" in job.error
    assert runner.submit("b", "retry", lambda p, c: 7).wait(10) == 7  # a failed job can be retried


def test_cancel_stops_at_the_next_check():
    runner = JobRunner()
    started, release = threading.Event(), threading.Event()

    def work(progress, cancel):
        started.set()
        release.wait(10)
        cancel.check()
        return "should not finish"

    job = runner.submit("c", "test", work)
    started.wait(10)
    job.cancel()
    release.set()
    job.wait(10)
    assert job.state == "cancelled" and job.result is None


def test_urgent_jobs_start_before_queued_background_training():
    runner = JobRunner()
    gate, order = threading.Event(), []
    runner.submit("blocker", "holds the worker", lambda p, c: gate.wait(10))
    runner.submit("train", "background training", lambda p, c: order.append("train"), priority=2)
    runner.submit("oracle", "oracle the user waits for", lambda p, c: order.append("oracle"), priority=1)
    load = runner.submit("load", "stored model", lambda p, c: order.append("load"), priority=0)
    gate.set()
    load.wait(10)
    runner.get("train").wait(10)
    assert order == ["load", "oracle", "train"]


def test_a_queued_job_can_be_cancelled_before_it_starts():
    runner = JobRunner()
    gate = threading.Event()
    runner.submit("blocker", "holds the worker", lambda p, c: gate.wait(10))
    queued = runner.submit("later", "never runs", lambda p, c: "ran")
    queued.cancel()
    gate.set()
    assert queued.wait(10) is None and queued.state == "cancelled"
