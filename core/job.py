"""Long work as the pages, the CLI and Ray workers see it: a :class:`Job`, the :class:`Task` a worker runs,
the worker's entry point with throttled progress, and the thread limits of each process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

UI_THREADS_ENV = "UE_UI_THREADS"
WORKER_NICE_ENV = "UE_WORKER_NICE"
DEFAULT_WORKER_NICE = 10  # training yields the CPU to the pages: a click is served before the next batch


# ---- the UI process ----------------------------------------------------------------------------
def limit_threads(threads: int | None = None) -> int:
    """Cap torch and BLAS threads in this process (default ``$UE_UI_THREADS`` or 1).

    Measured on a 2-core machine with training beside it: SPM's forget + re-predict took 10-35 ms with one
    thread and 200-1,200 ms with two; more threads than free cores is ruinous for small interactive work.
    """
    import torch
    from threadpoolctl import threadpool_limits

    threads = threads or int(os.environ.get(UI_THREADS_ENV, "1"))
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    return threads


def worker_nice() -> int:
    """The niceness training tasks run at: ``$UE_WORKER_NICE`` (a whole number, 0-19), else 10."""
    raw = os.environ.get(WORKER_NICE_ENV, "").strip()
    if not raw:
        return DEFAULT_WORKER_NICE
    if not raw.isdigit() or int(raw) > 19:
        raise ValueError(f"{WORKER_NICE_ENV} must be a whole number from 0 to 19, found {raw!r}; unset it for the "
                         f"default {DEFAULT_WORKER_NICE}")
    return int(raw)


def lower_priority(nice: int, tids: list[int] | None = None) -> None:
    """Raise the nice value of every thread of this process (or of the native thread ids ``tids``) to ``nice``
    (never lowers one; Linux sets it per thread, torch's pools may predate the task, and what a thread starts
    inherits its value). A no-op where the OS offers no per-thread priority."""
    if tids is None:
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            tids = [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except (OSError, AttributeError):  # the thread ended, or no setpriority on this OS
            pass


# ---- jobs --------------------------------------------------------------------------------------
@dataclass
class Job:
    """One piece of long work as the pages and the CLI see it; updated by the backend's monitor thread."""

    key: str
    title: str
    owners: set[str] = field(default_factory=set)
    progress: float = 0.0
    message: str = "queued"
    state: str = "queued"  # queued | running | done | failed | cancelled
    result: Any = None
    error: str = ""
    submitted: float = field(default_factory=time.time)
    started: float = 0.0
    finished: float = 0.0
    local: bool = False  # ran in this process's lane, not on a Ray worker
    expected_s: float | None = None  # how long the work should take once started (an estimate), when known
    expected_from: str = ""  # what ``expected_s`` was judged from, for the user
    note: str = ""  # what the user should know beside the progress (e.g. why a recorded oracle trains instead)
    cancelling: bool = False  # cancel() was called: it ends within seconds
    done_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _cancel: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def finished_ok(self) -> bool:
        return self.state == "done"

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def elapsed(self) -> float:
        if not self.started:
            return 0.0
        return (self.finished or time.time()) - self.started

    @property
    def eta(self) -> float | None:
        """Seconds left: extrapolated from the progress so far once there is enough to go on, else the
        estimate ``expected_s`` less the time run; None when neither is known."""
        if self.state == "running" and self.progress >= 0.02 and self.elapsed >= 1.0:
            return self.elapsed * (1 - self.progress) / self.progress
        if self.active and self.expected_s:
            return max(self.expected_s - self.elapsed, 0.0)
        return None

    def report(self, fraction: float, message: str) -> None:
        self.progress = max(0.0, min(1.0, float(fraction)))
        self.message = message
        if self.state == "queued":
            self.state, self.started = "running", time.time()

    def cancel(self) -> None:
        self.cancelling = True
        self._cancel()

    def wait(self, timeout: float | None = None) -> Any:
        self.done_event.wait(timeout)
        return self.result

    def _finish(self, state: str, result: Any = None, error: str = "") -> None:
        self.result, self.error, self.state = result, error, state
        self.finished = time.time()
        self.started = self.started or self.finished
        if state == "done":
            self.progress, self.message = 1.0, "done"
        else:
            self.message = error or state
        self.done_event.set()


@dataclass
class Task:
    """What to run on a worker: ``fn(*args, progress=..., **kwargs)``, then ``finalize(result)`` on the driver.

    ``fn`` must be a module-level function (workers import it). A :class:`~core.data.dataset.Dataset` among
    ``args`` travels through the object store, put once per dataset.
    """

    fn: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    finalize: Callable[[Any], Any] | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    retries: int = 1  # a killed worker is retried once, then the job fails with the cause


def worker_entry(fn: Callable, kwargs: dict, key: str, board, num_cpus: float, *args) -> Any:
    """Runs on a Ray worker: thread limits for this task (workers are reused), then ``fn`` with progress.
    ``args`` come last and loose so that Ray resolves the object-store references among them."""
    threads = max(1, int(num_cpus))
    limit_threads(threads)
    lower_priority(worker_nice())
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.perf_counter()
        if fraction >= 1.0 or now - last[0] >= 0.2:  # fire-and-forget, ~0.6 ms each; throttled anyway
            last[0] = now
            board.update.remote(key, float(fraction), str(message))

    progress(0.0, "started")
    return fn(*args, progress=progress, **kwargs)


class ProgressBoard:
    """A tiny actor holding job key -> (fraction, message); tasks report, the monitor polls."""

    def __init__(self) -> None:
        self.state: dict[str, tuple[float, str]] = {}

    def update(self, key: str, fraction: float, message: str) -> None:
        self.state[key] = (fraction, message)

    def snapshot(self, keys: list[str]) -> dict[str, tuple[float, str]]:
        return {k: self.state[k] for k in keys if k in self.state}

    def forget(self, keys: list[str]) -> None:
        for k in keys:
            self.state.pop(k, None)
