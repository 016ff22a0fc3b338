"""Executors: run sweep points in this process, in a local process pool, or on Dask (a cluster or a LocalCluster).

Every executor has ``map(tasks, on_result)``: it pulls tasks from the iterable only as it has room (a few per
worker), so the sweep can check the store right before each submission (another sweep may have finished the
point meanwhile), and calls ``on_result(row)`` in the calling thread for each finished point, in completion order.
Rows are produced by :func:`~sphericalcow.sweep.runner.run_point`, the same function everywhere, so every executor
gives the same rows. A point whose worker dies becomes a ``failed`` row; the sweep goes on.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from ..errors import SphericalCowError
from .runner import WORKER_DIED, failed_row, init_worker, mp_context, run_point, run_point_isolated

__all__ = [
    "EXECUTORS",
    "DaskExecutor",
    "Executor",
    "InProcessExecutor",
    "ProcessExecutor",
    "cpu_count",
    "make_executor",
]

#: Executor names accepted by ``sweep(executor=...)`` and ``cow sweep --executor``.
EXECUTORS = ("auto", "inprocess", "process", "dask")

#: ``auto`` runs sweeps with at most this many points to run in-process (a pool costs a second or more to start).
AUTO_INPROCESS_MAX = 4

OnResult = Callable[[dict[str, Any]], None]


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover  (macOS, Windows)
        return max(1, os.cpu_count() or 1)


class Executor(Protocol):
    """Runs tasks and reports rows; see the module docstring."""

    name: str
    jobs: int

    def map(self, tasks: Iterable[dict[str, Any]], on_result: OnResult) -> None: ...


class InProcessExecutor:
    """One point after another in this process (no start-up cost; a crash of a point ends the sweep)."""

    name = "inprocess"

    def __init__(self) -> None:
        self.jobs = 1

    def threads(self) -> int | None:
        """Intra-op threads for each point: leave this process's setting alone."""
        return None

    def map(self, tasks: Iterable[dict[str, Any]], on_result: OnResult) -> None:
        for task in tasks:
            on_result(run_point(task))


class ProcessExecutor:
    """A local pool of ``jobs`` worker processes (default: one per CPU), each with ``cpus // jobs`` torch threads.

    A worker that dies (segfault, out of memory, ``os._exit``) breaks the pool: the points that were running are
    re-run one at a time in a fresh pool, and the one that kills its worker alone is recorded as ``failed``.
    """

    name = "process"

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = jobs or cpu_count()
        self.window = 2 * self.jobs

    def threads(self) -> int:
        """Intra-op threads per worker, so that the workers together use the CPUs once."""
        return max(1, cpu_count() // self.jobs)

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.jobs,
            mp_context=mp_context(),
            initializer=init_worker,
            initargs=(os.getpid(), self.threads()),
        )

    def map(self, tasks: Iterable[dict[str, Any]], on_result: OnResult) -> None:
        it = iter(tasks)
        suspects: deque[dict[str, Any]] = deque()  # were running when a worker died: re-run alone
        inflight: dict[Future, dict[str, Any]] = {}
        exhausted = False
        pool = self._pool()
        try:
            while True:
                limit = 1 if suspects else self.window
                while len(inflight) < limit:
                    if suspects:
                        task = suspects.popleft()
                    elif not exhausted:
                        task = next(it, None)
                        if task is None:
                            exhausted = True
                            break
                    else:
                        break
                    inflight[pool.submit(run_point, task)] = task
                if not inflight:
                    return
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                running_alone = len(inflight) == 1
                broken: list[dict[str, Any]] = []
                for fut in done:
                    task = inflight.pop(fut)
                    try:
                        row = fut.result()
                    except BrokenProcessPool:
                        broken.append(task)
                        continue
                    except Exception as e:  # e.g. a task that cannot be pickled
                        row = failed_row(task, f"{type(e).__name__}: {e}")
                    on_result(row)
                if broken:
                    broken.extend(inflight.values())  # the rest of the pool's futures fail the same way
                    inflight.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    if running_alone and len(broken) == 1:
                        on_result(failed_row(broken[0], WORKER_DIED))
                    else:
                        suspects.extend(broken)
                    pool = self._pool()
        finally:
            pool.shutdown(wait=not inflight, cancel_futures=True)


class DaskExecutor:
    """Dask distributed: a running scheduler (``scheduler="tcp://host:port"``), else a LocalCluster of ``jobs``
    single-threaded workers (processes, or threads of this process with ``processes=False``).

    Each point runs in a child process of its Dask worker (:func:`~.runner.run_point_isolated`, ``isolate=True``),
    so a point that kills its process becomes a ``failed`` row and the worker, with the results it holds, lives
    on (a dying Dask worker loses its finished results, and the cluster recomputes them). Workers must be allowed
    to start processes: the LocalCluster's are (``distributed.worker.daemon = False``); configure a cluster of
    your own likewise, else points run in the worker itself. Workers need sphericalcow installed, and whatever the
    spec's ``imports`` name: a module importable there, or a ``.py`` file at the same absolute path.
    """

    name = "dask"

    def __init__(
        self, jobs: int | None = None, scheduler: str | None = None, *, processes: bool = True, isolate: bool = True
    ) -> None:
        self.jobs = jobs or cpu_count()
        self.scheduler = scheduler
        self.processes = processes
        self.isolate = isolate

    def threads(self) -> int | None:
        """Leave workers' thread settings to the cluster (Dask sets one OpenMP thread per worker)."""
        return None

    def _client(self) -> tuple[Any, Any]:
        try:
            import dask
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise SphericalCowError(
                "the dask executor needs dask.distributed; install it with pip install 'dask[distributed]'"
            ) from None
        if self.scheduler:
            try:
                return Client(self.scheduler, timeout="20s"), None
            except (OSError, TimeoutError, ValueError) as e:
                raise SphericalCowError(f"cannot reach the Dask scheduler at {self.scheduler!r}: {e}") from None
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = LocalCluster(
                n_workers=self.jobs,
                threads_per_worker=1,
                processes=self.processes,
                dashboard_address=":0",  # a free port: never "port 8787 is in use" when clusters run side by side
                silence_logs=logging.CRITICAL,
            )
        return Client(cluster), cluster

    def map(self, tasks: Iterable[dict[str, Any]], on_result: OnResult) -> None:
        log = logging.getLogger("distributed")
        level = log.level
        if not self.scheduler:
            log.setLevel(logging.CRITICAL)  # a LocalCluster is ours: its start/stop chatter is noise
        try:
            self._map(tasks, on_result)
        finally:
            log.setLevel(level)

    def _map(self, tasks: Iterable[dict[str, Any]], on_result: OnResult) -> None:
        client, cluster = self._client()
        from dask.distributed import as_completed

        func = run_point_isolated if self.isolate else run_point
        try:
            window = 2 * max(1, sum(client.nthreads().values()) if self.scheduler else self.jobs)
            it = iter(tasks)
            inflight: dict[str, dict[str, Any]] = {}
            ac = as_completed()

            def fill() -> None:
                while len(inflight) < window:
                    task = next(it, None)
                    if task is None:
                        return
                    fut = client.submit(func, task, pure=False)
                    inflight[fut.key] = task
                    ac.add(fut)

            fill()
            for fut in ac:
                task = inflight.pop(fut.key)
                try:
                    row = fut.result()
                except Exception as e:  # KilledWorker, lost connection, ...
                    row = failed_row(task, f"dask: {type(e).__name__}: {e}")
                fut.release()
                on_result(row)
                fill()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def make_executor(
    name: str, *, n_pending: int, jobs: int | None = None, scheduler: str | None = None, dask_processes: bool = True
) -> Executor:
    """The executor called ``name`` (one of :data:`EXECUTORS`). ``auto``: in-process when at most
    :data:`AUTO_INPROCESS_MAX` points are to run or ``jobs == 1``, else the process pool (Dask if a
    ``scheduler`` is given)."""
    if name not in EXECUTORS:
        raise SphericalCowError(f"executor {name!r} is not allowed; expected one of {', '.join(EXECUTORS)}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise SphericalCowError(f"jobs={jobs!r} is not allowed; expected an integer >= 1")
    if scheduler is not None and name not in ("dask", "auto"):
        raise SphericalCowError(f"--scheduler is for the dask executor, not {name!r}")
    if name == "auto":
        if scheduler:
            name = "dask"
        elif jobs == 1 or n_pending <= AUTO_INPROCESS_MAX or (cpu_count() == 1 and jobs is None):
            name = "inprocess"
        else:
            name = "process"
    if name == "inprocess":
        return InProcessExecutor()
    if name == "process":
        return ProcessExecutor(jobs)
    return DaskExecutor(jobs, scheduler, processes=dask_processes)
