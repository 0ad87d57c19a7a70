"""Long work on Ray: training, oracle seeds, method runs, layouts and sweeps, with progress and cancel.

One :class:`Backend` per process (the app keeps it in ``st.cache_resource`` and starts it at its first
visitor; the CLI, benches and tests make their own). With no address it starts a local Ray instance on the
first job (or on ``start``), from a daemon thread that outlives Streamlit's script runs (a local ``ray.init``
dies with the thread that called it), and Ray stops with the process. ``UE_RAY_ADDRESS`` (or ``address=``)
attaches to an existing cluster instead; its workers receive the ``core`` package with each job, and tasks
that ask for a GPU go to GPU workers.

Only that thread, the monitor, talks to Ray: it submits, polls progress from a small actor, cancels, and
hands finished results to a driver-side ``finalize`` (which writes the store: workers return weights and
arrays, never write). Jobs are keyed by what they compute, so two sessions asking for the same oracle share
one job; each job remembers which sessions asked for it, and a session lists only its own.

Interactive work (deleting, re-predicting, scoring, drawing) never goes through Ray: it runs in the UI
process with few BLAS/torch threads (:func:`limit_threads`), or for warm-up work in the process's
:meth:`Backend.run_local` lane, so it never queues behind training.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.job import (  # noqa: F401  (Job, ProgressBoard, limit_threads and worker_entry are re-exported)
    Job,
    ProgressBoard,
    Task,
    limit_threads,
    lower_priority,
    worker_entry,
    worker_nice,
)
from core.models.base import Cancelled, CancelToken, Progress

ADDRESS_ENV = "UE_RAY_ADDRESS"
CPUS_ENV = "UE_RAY_CPUS"
OBJECT_STORE_ENV = "UE_RAY_OBJECT_STORE_MB"
LAZY_ENV = "UE_RAY_LAZY"  # "1": the app starts Ray on its first long job instead of at its first visitor
SESSION_TRAININGS_ENV = "UE_SESSION_TRAININGS"
# one click of every post-hoc method with its oracles; `make classroom` sets fewer, a room's fair share
DEFAULT_SESSION_TRAININGS = 16
DEFAULT_OBJECT_STORE_MB = 600  # Fashion-MNIST is ~220 MB as float32; a bounded store, not Ray's 30% of RAM
ATTACH_TIMEOUT_S = 10.0
PROGRESS_POLL_S = 0.5
COLLECT_WAIT_S = 0.25  # the monitor loop's longest sleep while tasks run: new submissions and cancels wait this long
# finished jobs the store (or a cache) can redo cheaply
RELOADABLE_PREFIXES = ("model:", "oracle:", "recorded:", "warm:")
KEEP_FINISHED = int(os.environ.get("UE_KEEP_JOBS", "32"))
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class BackendError(RuntimeError):
    """Ray could not be started or reached; the message says what to do."""


def init_below_pages(ray, **options) -> None:
    """``ray.init(**options)`` for a local instance, called from a thread of its own that first lowers its
    niceness to the workers' (``worker_nice``) and then waits for ever: Ray's processes and the Ray threads of
    this process inherit that niceness from it, so they do not take the CPU from the pages' threads. A local
    Ray's processes die with the thread that started them, hence the wait. The caller (the monitor thread)
    keeps its own priority: a thread that holds the GIL must not be one the kernel puts last."""
    done, failure = threading.Event(), []

    def owner() -> None:
        try:
            lower_priority(worker_nice(), [threading.get_native_id()])
            with own_scheduling_group(worker_nice()):
                ray.init(**options)
        except BaseException as err:  # handed to the caller, which reports it
            failure.append(err)
        done.set()
        threading.Event().wait()  # Ray's processes end with this thread; the process's exit ends both

    threading.Thread(target=owner, name="ue-ray-owner", daemon=True).start()
    done.wait()
    if failure:
        raise failure[0]


@contextlib.contextmanager
def own_scheduling_group(nice: int):
    """While this is open, the processes Ray starts (GCS, raylet and, through the raylet, the workers) start in a
    process session of their own, whose scheduling group is set to ``nice`` (or the pages' group's, if higher).

    Where Linux groups processes by session for scheduling (``sched_autogroup``, on in many distributions'
    kernels), nice orders threads only within one group, and busy groups share the CPU equally. Ray in the
    dashboard's group would take that group's share from the pages whenever anything else on the machine is busy
    (the teacher's browser, the room's browsers, another user's work), whatever the workers' nice. In a group of its
    own it trains on what the pages and the rest leave. Ray offers no option for this: the hook wraps
    ``ray._private.services.ConsolePopen``, the class Ray starts its processes with (ray is pinned). Elsewhere (no
    autogroups, a process in none, not Linux, a kernel that refuses the setting, a Ray without that class) it changes
    nothing. Ray's processes still end with the thread that started them: Ray's kernel fate-sharing does not depend
    on the session."""
    try:
        from ray._private import services
    except ImportError:
        services = None
    started = getattr(services, "ConsolePopen", None)
    # where this process cannot set its own group's niceness, it could not set Ray's either, and Ray in a group of
    # its own at nice 0 would compete with the pages as an equal: it stays in theirs
    if not isinstance(started, type) or (mine := settable_group_nice()) is None:
        yield
        return
    nice = max(nice, mine)  # never above the pages' group

    class InOwnGroup(started):
        def __init__(self, *args, **kwargs):
            kwargs["start_new_session"] = True
            super().__init__(*args, **kwargs)
            set_group_nice(self.pid, nice)

    services.ConsolePopen = InOwnGroup
    try:
        yield
    finally:
        services.ConsolePopen = started


def group_nice(pid: int) -> int | None:
    """The niceness of the scheduling group (autogroup) of process ``pid``; None where the kernel has none or the
    process is in none (its file is empty for processes of the boot session, such as a service or CI runner started
    without a session of its own)."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def settable_group_nice() -> int | None:
    """The niceness of this process's scheduling group where the kernel lets this process set it (probed by setting
    it to the value it has), else None."""
    mine = group_nice(os.getpid())
    return mine if mine is not None and set_group_nice(os.getpid(), mine) else None


def set_group_nice(pid: int, nice: int, tries: int = 20) -> bool:
    """Set the niceness of the scheduling group of process ``pid`` (its session's leader); whether it took.
    The kernel lets a user without CAP_SYS_ADMIN do this once per 0.1 s, machine-wide, hence the tries."""
    for _ in range(tries):
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
            return True
        except BlockingIOError:  # EAGAIN: another write in the last 0.1 s
            time.sleep(0.11)
        except OSError:  # the process ended, or this kernel refuses it
            return False
    return False


def check_address(address: str, timeout: float = ATTACH_TIMEOUT_S) -> None:
    """Fail fast with a useful message when nothing listens at ``host:port`` (``ray.init`` can hang there)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as err:
        raise BackendError(unreachable_message(address, err)) from err


def unreachable_message(address: str, err: BaseException) -> str:
    return (f"Cannot reach the Ray cluster at {address!r} ({ADDRESS_ENV} or --ray-address): {err}. "
            f"Start it with `ray start --head --port {address.rpartition(':')[2] or 6379}`, or unset "
            f"{ADDRESS_ENV} (drop --ray-address) to run everything on this machine.")


def session_training_cap() -> int:
    """How many trainings (oracles, method runs) one app session may have queued or running before it starts
    more: ``$UE_SESSION_TRAININGS`` (a whole number; 0: no limit), else 16. Ray runs tasks in the order they
    come, so without a cap one session clicking Forget again and again would queue work every other session's
    oracles then wait behind."""
    raw = os.environ.get(SESSION_TRAININGS_ENV, "").strip()
    if not raw:
        return DEFAULT_SESSION_TRAININGS
    if not raw.isdigit():
        raise InputError(f"{SESSION_TRAININGS_ENV} must be a whole number (0: no limit), found {raw!r}; unset it for "
                         f"the default {DEFAULT_SESSION_TRAININGS}")
    return int(raw)


class Backend:
    """Ray for long work, local by default; see the module docstring."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 object_store_mb: int | None = None, worker_env: dict[str, str] | None = None):
        self.address = address if address is not None else (os.environ.get(ADDRESS_ENV) or None)
        self.num_cpus = num_cpus or int(os.environ.get(CPUS_ENV, "0")) or os.cpu_count() or 1
        self.object_store_mb = object_store_mb or int(os.environ.get(OBJECT_STORE_ENV, DEFAULT_OBJECT_STORE_MB))
        self.worker_env = dict(worker_env or {})
        self.status = "not started"  # not started | starting | ready | failed
        self.error = ""
        self.start_seconds: float | None = None
        self.has_gpu = False
        self._jobs: dict[str, Job] = {}
        self._pending: list[tuple[Job, Task]] = []
        self._running: dict[Any, tuple[Job, Task]] = {}  # ObjectRef -> (job, task)
        self._cancels: list[Job] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._finalizers = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="ue-finalize")
        self._lane = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ue-local")
        self._datasets: dict[str, Any] = {}
        self._ray = None
        self._owns_ray = False  # stop Ray on shutdown only when this backend started it
        self._board = None
        self._remote = None

    # ---- public -----------------------------------------------------------------------------------
    def start(self, wait: bool = False, timeout: float = 60.0) -> Backend:
        """Start (or attach to) Ray in the monitor thread; with ``wait``, block until it is up."""
        with self._lock:
            if self._thread is None:
                self.status = "starting"
                self._thread = threading.Thread(target=self._monitor, name="ue-ray", daemon=True)
                self._thread.start()
        if wait:
            self._ready.wait(timeout)
            if self.status == "failed":
                raise BackendError(self.error)
            if self.status != "ready":
                raise BackendError(f"Ray did not start within {timeout:.0f} s")
        return self

    def submit(self, key: str, title: str, task: Task, owner: str | None = None) -> Job:
        """Run ``task`` on Ray unless a job with ``key`` is queued, running or done (then that one is shared)."""
        self.start()
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.state in ("failed", "cancelled"):
                job = Job(key, title)
                job._cancel = lambda j=job: self._request_cancel(j)
                self._jobs[key] = job
                if self.status == "failed":
                    job._finish("failed", error=self.error)
                else:
                    self._pending.append((job, task))
                    self._wake.notify_all()
            if owner:
                job.owners.add(owner)
            self._forget_finished()
            return job

    def _forget_finished(self) -> None:
        """Bound the job table: finished jobs whose result the store can give again (models, oracles, warm-ups)
        are dropped beyond the newest ``KEEP_FINISHED``, so a long-running server does not hold every model
        any session ever asked for. Caller holds the lock."""
        done = [j for j in self._jobs.values() if j.state == "done" and j.key.startswith(RELOADABLE_PREFIXES)]
        for job in sorted(done, key=lambda j: j.finished)[:max(0, len(done) - KEEP_FINISHED)]:
            del self._jobs[job.key]

    def run_local(self, key: str, title: str, work: Callable[[Progress, CancelToken], Any],
                  owner: str | None = None) -> Job:
        """Run ``work(progress, cancel)`` in this process's one-thread lane: for work that must fill caches of
        objects living here (e.g. a loaded model's split predictions), never training."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.state in ("failed", "cancelled"):
                job = Job(key, title, local=True)
                token = CancelToken()

                def cancel(j=job, t=token):
                    t.cancel()
                    if j.state == "queued":
                        j._finish("cancelled", error="cancelled before it started")

                job._cancel = cancel
                self._jobs[key] = job
                self._lane.submit(self._run_here, job, work, token)
            if owner:
                job.owners.add(owner)
            self._forget_finished()
            return job

    def add_done(self, key: str, title: str, result: Any, owner: str | None = None) -> Job:
        """A job that is done already (``result`` was at hand, e.g. a recorded oracle read in milliseconds), so
        that the pages treat it as they treat any finished job."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.state != "done":
                job = Job(key, title, local=True)
                job._finish("done", result)
                self._jobs[key] = job
            if owner:
                job.owners.add(owner)
            self._forget_finished()
            return job

    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)

    def release(self, job: Job, owner: str) -> bool:
        """``owner`` no longer needs ``job`` (e.g. its session undid the request the job serves): drop its claim,
        and cancel the job when it is still going and no other session claims it. Returns whether it was
        cancelled; another session's job is never stopped."""
        with self._lock:
            job.owners.discard(owner)
            orphaned = job.active and not job.owners
        if orphaned:
            job.cancel()
        return orphaned

    def discard(self, job: Job) -> None:
        """Forget ``job`` once it has ended (e.g. failed), so that the next call asking for its key starts it again."""
        with self._lock:
            if not job.active and self._jobs.get(job.key) is job:
                del self._jobs[job.key]

    def jobs(self, owner: str | None = None) -> list[Job]:
        """Jobs, oldest first; with ``owner`` only those that session asked for."""
        out = [j for j in self._jobs.values() if owner is None or owner in j.owners]
        return sorted(out, key=lambda j: j.submitted)

    def trainings(self, owner: str) -> list[Job]:
        """The Ray jobs ``owner`` asked for that are still queued or running (loads in this process not counted)."""
        return [j for j in self.jobs(owner) if j.active and not j.local]

    def resources(self) -> dict:
        """The cluster's total resources (CPU, GPU, memory), once Ray is up."""
        if self.status != "ready":
            return {}
        return dict(self._ray.cluster_resources())

    def shutdown(self) -> None:
        """Cancel every job, stop the monitor and, when it was started here, Ray."""
        for job in list(self._jobs.values()):
            if job.active:
                job.cancel()
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._lane.shutdown(wait=True, cancel_futures=True)
        self._finalizers.shutdown(wait=True, cancel_futures=True)

    # ---- the local lane ---------------------------------------------------------------------------
    @staticmethod
    def _run_here(job: Job, work: Callable, token: CancelToken) -> None:
        if job.state != "queued":
            return
        job.report(0.0, "started")
        try:
            token.check()
            job._finish("done", work(job.report, token))
        except Cancelled:
            job._finish("cancelled", error="cancelled")
        except Exception as err:  # shown to the user; the traceback goes to the log
            traceback.print_exc()
            job._finish("failed", error=f"{type(err).__name__}: {err}")

    # ---- the monitor thread (the only one that talks to Ray) -----------------------------------
    def _request_cancel(self, job: Job) -> None:
        with self._lock:
            if not job.active:
                return
            if any(j is job for j, _ in self._pending):
                self._pending = [(j, t) for j, t in self._pending if j is not job]
                job._finish("cancelled", error="cancelled before it started")
                return
            self._cancels.append(job)
            self._wake.notify_all()

    def _init_ray(self) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        self._ray = ray
        start = time.perf_counter()
        common = dict(include_dashboard=False, log_to_driver=False, logging_level="error",
                      configure_logging=True, ignore_reinit_error=True)
        if self.address:
            check_address(self.address)
        if ray.is_initialized():
            pass  # a test or a script started Ray in this process already: use it
        elif self.address:
            modules = [str(PROJECT_ROOT / "core")]
            try:
                ray.init(address=self.address, runtime_env={"py_modules": modules,
                                                            "env_vars": self.worker_env}, **common)
            except Exception as err:
                raise BackendError(unreachable_message(self.address, err)) from err
        else:
            self._owns_ray = True
            init_below_pages(ray, num_cpus=self.num_cpus, object_store_memory=self.object_store_mb << 20,
                             job_config=ray.job_config.JobConfig(code_search_path=[str(PROJECT_ROOT)]), **common)
        self._board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        self._remote = ray.remote(worker_entry)
        ray.get(self._board.snapshot.remote([]), timeout=60)
        self.has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        self.start_seconds = time.perf_counter() - start

    def _monitor(self) -> None:
        try:
            self._init_ray()
        except Exception as err:
            self.status = "failed"
            self.error = str(err) if isinstance(err, BackendError) else \
                f"Ray did not start: {type(err).__name__}: {err}"
            with self._lock:
                pending, self._pending = self._pending, []
            for job, _ in pending:
                job._finish("failed", error=self.error)
            self._ready.set()
            return
        self.status = "ready"
        self._ready.set()
        last_poll = 0.0
        while True:
            with self._lock:
                if not self._pending and not self._cancels and not self._running and not self._closed:
                    self._wake.wait(1.0)
                pending, self._pending = self._pending, []
                cancels, self._cancels = self._cancels, []
                closed = self._closed
            for job, task in pending:
                self._launch(job, task)
            for job in cancels:
                self._cancel_running(job)
            if closed:
                for job, _ in list(self._running.values()):
                    self._cancel_running(job)
                self._collect(timeout=0)
                if self._owns_ray and self._ray.is_initialized():
                    self._ray.shutdown()
                return
            self._collect(timeout=COLLECT_WAIT_S)
            if self._running and time.perf_counter() - last_poll >= PROGRESS_POLL_S:
                last_poll = time.perf_counter()
                self._poll_progress()

    def _dataset_ref(self, dataset) -> Any:
        fp = dataset.fingerprint()
        if fp not in self._datasets:
            self._datasets[fp] = self._ray.put(dataset)
        return self._datasets[fp]

    def _launch(self, job: Job, task: Task) -> None:
        from core.data.dataset import Dataset

        try:
            args = tuple(self._dataset_ref(a) if isinstance(a, Dataset) else a for a in task.args)
            options = dict(num_cpus=task.num_cpus, num_gpus=task.num_gpus, max_retries=task.retries,
                           retry_exceptions=False)
            if self.worker_env and not self.address:
                options["runtime_env"] = {"env_vars": self.worker_env}
            ref = self._remote.options(**options).remote(task.fn, task.kwargs, job.key, self._board,
                                                         task.num_cpus, *args)
        except Exception as err:
            traceback.print_exc()
            job._finish("failed", error=f"could not submit to Ray: {type(err).__name__}: {err}")
            return
        self._running[ref] = (job, task)

    def _cancel_running(self, job: Job) -> None:
        for ref, (j, _) in list(self._running.items()):
            if j is job:
                try:
                    self._ray.cancel(ref, force=True)  # kills the worker within ~20 ms; nothing was written
                except Exception:
                    traceback.print_exc()

    def _collect(self, timeout: float) -> None:
        if not self._running:
            return
        refs = list(self._running)
        # wakes as soon as one task ends (or after ``timeout``), then takes every task that has ended
        done, _ = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if done and len(refs) > 1:
            done, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in done:
            job, task = self._running.pop(ref)
            try:
                result = self._ray.get(ref)
            except Exception as err:
                job._finish(*self._failure(err))
                continue
            self._board.forget.remote([job.key])
            job.report(0.99, "storing the result")
            self._finalizers.submit(self._finalize, job, task, result)

    def _failure(self, err: Exception) -> tuple[str, None, str]:
        ex = self._ray.exceptions
        if isinstance(err, ex.TaskCancelledError):
            return "cancelled", None, "cancelled"
        if isinstance(err, ex.WorkerCrashedError):
            return "failed", None, ("the worker process died (killed, or out of memory) and died again on its "
                                    "retry; nothing was stored")
        if isinstance(err, ex.RayTaskError):
            cause = err.cause if getattr(err, "cause", None) is not None else err
            if isinstance(cause, Cancelled | KeyboardInterrupt):
                return "cancelled", None, "cancelled"
            return "failed", None, f"{type(cause).__name__}: {cause}"
        return "failed", None, f"{type(err).__name__}: {err}"

    @staticmethod
    def _finalize(job: Job, task: Task, result: Any) -> None:
        try:
            job._finish("done", task.finalize(result) if task.finalize else result)
        except Exception as err:
            traceback.print_exc()
            job._finish("failed", error=f"storing the result failed: {type(err).__name__}: {err}")

    def _poll_progress(self) -> None:
        keys = [job.key for job, _ in self._running.values()]
        try:
            snapshot = self._ray.get(self._board.snapshot.remote(keys), timeout=5)
        except Exception:
            return
        for job, _ in self._running.values():
            if job.key in snapshot and job.active:
                job.report(*snapshot[job.key])
