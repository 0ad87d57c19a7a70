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
