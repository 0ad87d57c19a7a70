"""Long work (training, oracles, unlearning runs) off the UI thread, with progress and cancellation.

A ``JobRunner`` is an ordinary object: the app keeps one per process (Streamlit's cache_resource),
tests make their own. Jobs are keyed by what they compute, so two sessions asking for the same oracle
share one job. Results are immutable; a failed or cancelled job keeps its message and saves nothing.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.models.base import Cancelled, CancelToken, Progress


@dataclass
class Job:
    key: str
    title: str
    cancel_token: CancelToken = field(default_factory=CancelToken)
    progress: float = 0.0
    message: str = "queued"
    state: str = "queued"  # queued | running | done | failed | cancelled
    result: Any = None
    error: str = ""
    started: float = 0.0
    finished: float = 0.0
    priority: int = 1
    done_event: threading.Event = field(default_factory=threading.Event)

    @property
    def finished_ok(self) -> bool:
        return self.state == "done"

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def report(self, fraction: float, message: str) -> None:
        self.progress = max(0.0, min(1.0, float(fraction)))
        self.message = message

    def cancel(self) -> None:
        self.cancel_token.cancel()
        if self.state == "queued":
            self.state, self.message = "cancelled", "cancelled before it started"
            self.done_event.set()

    def wait(self, timeout: float | None = None) -> Any:
        self.done_event.wait(timeout)
        return self.result


class JobRunner:
    """Runs submitted work on a few worker threads (one by default: two CPU cores are shared).

    Queued jobs start by priority, then by submission: 0 for what a user is waiting on now (loading a
    stored model), 1 for oracles and method runs, 2 for training models nobody has asked to use yet.
    """

    def __init__(self, workers: int = 1):
        self._jobs: dict[str, Job] = {}
        self._queue: list[tuple[int, int, Job, Callable]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._threads = [threading.Thread(target=self._worker, name=f"ue-job-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, key: str, title: str, work: Callable[[Progress, CancelToken], Any], priority: int = 1) -> Job:
        """Queue ``work(progress, cancel)`` unless a job with ``key`` is queued, running or done."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state in ("queued", "running", "done"):
                if job.state == "queued" and priority < job.priority:  # asked for again, more urgently
                    job.priority = priority
                    self._queue = [(priority if j is job else p, n, j, w) for p, n, j, w in self._queue]
                    heapq.heapify(self._queue)
                return job
            job = Job(key, title, priority=priority)
            self._jobs[key] = job
            heapq.heappush(self._queue, (priority, next(self._order), job, work))
            self._wake.notify()
            return job

    def _worker(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed and not self._queue:
                    return
                _, _, job, work = heapq.heappop(self._queue)
            if job.state == "queued":
                self._run(job, work)

    def _run(self, job: Job, work: Callable[[Progress, CancelToken], Any]) -> None:
        job.state, job.started = "running", time.time()
        try:
            job.cancel_token.check()
            job.result = work(job.report, job.cancel_token)
            job.state, job.progress, job.message = "done", 1.0, "done"
        except Cancelled:
            job.state, job.message = "cancelled", "cancelled"
        except Exception as err:  # shown to the user; the traceback goes to the log
            job.state, job.error = "failed", f"{type(err).__name__}: {err}"
            job.message = job.error
            traceback.print_exc()
        finally:
            job.finished = time.time()
            job.done_event.set()

    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.started or float("inf"))

    def shutdown(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel()
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
