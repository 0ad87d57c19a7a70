"""Long work (training, oracles, unlearning runs) off the UI thread, with progress and cancellation.

A ``JobRunner`` is an ordinary object: the app keeps one per process (Streamlit's cache_resource),
tests make their own. Jobs are keyed by what they compute, so two sessions asking for the same oracle
share one job. Results are immutable; a failed or cancelled job keeps its message and saves nothing.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
    future: Future | None = None

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
        if self.state == "queued" and self.future is not None and self.future.cancel():
            self.state, self.message = "cancelled", "cancelled before it started"

    def wait(self, timeout: float | None = None) -> Any:
        if self.future is not None:
            try:
                self.future.result(timeout)
            except Exception:  # the job records its own error
                pass
        return self.result


class JobRunner:
    """Runs submitted work on a small thread pool (one worker by default: two CPU cores are shared)."""

    def __init__(self, workers: int = 1):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ue-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, key: str, title: str, work: Callable[[Progress, CancelToken], Any]) -> Job:
        """Start ``work(progress, cancel)`` unless a job with ``key`` is queued, running or done."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state in ("queued", "running", "done"):
                return job
            job = Job(key, title)
            self._jobs[key] = job
            job.future = self._pool.submit(self._run, job, work)
            return job

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

    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.started or float("inf"))

    def shutdown(self) -> None:
        for job in self._jobs.values():
            job.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
