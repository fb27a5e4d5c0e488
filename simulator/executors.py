"""Where the points of a sweep run: this process, a local process pool, Dask or Ray.

Every executor does one thing: call a picklable function on a stream of argument tuples and
yield the results as they finish, with at most ``window`` calls in flight. The stream is
consumed lazily, so the memory a sweep holds is bounded by the window, not by the number of
points (a ten-million-point grid is never materialised). The caller journals each result as it
arrives, so durability does not depend on the executor: a killed sweep keeps every row the
caller had written, whatever ran the points.

* ``local``: a ``ProcessPoolExecutor`` of ``jobs`` processes (``jobs = 1``: in this process).
* ``dask``: a ``distributed.Client`` on the scheduler at ``address``, or on a ``LocalCluster``
  of ``jobs`` single-threaded worker processes when no address is given.
* ``ray``: ``ray.init(address)`` (``None`` starts a local Ray) and one remote task per point.

Dask and Ray are optional extras (``pip install -e ".[dask]"`` / ``".[ray]"``); asking for one
that is not installed is a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from simulator.errors import ConfigError

EXECUTORS = ("local", "dask", "ray")
WINDOW_PER_WORKER = 4  # calls in flight per worker: enough to hide scheduling latency


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker_init(parent_pid: int, fds: tuple[tuple[int, int, int], ...]) -> None:
    """A local worker: ignores Ctrl-C (the parent stops submitting and keeps finished rows),
    drops its inherited copy of the output file (so the lock is the parent's alone), and dies
    with the parent (SIGKILL or SIGTERM of the parent must not leave workers computing rows
    nobody writes): PR_SET_PDEATHSIG on Linux, else a thread that watches the parent's pid."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd, dev, ino in fds:  # (fd, st_dev, st_ino): close it only if inherited (fork)
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (dev, ino):
                os.close(fd)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def _windowed(
    submit: Callable[[tuple[Any, ...]], Any],
    wait_some: Callable[[set[Any]], tuple[set[Any], set[Any]]],
    result: Callable[[Any], Any],
    items: Iterable[tuple[Any, ...]],
    window: int,
) -> Iterator[Any]:
    """Keep at most ``window`` submitted calls in flight; yield results as they finish."""
    stream = iter(items)
    pending: set[Any] = set()
    exhausted = False
    while True:
        while not exhausted and len(pending) < window:
            args = next(stream, None)
            if args is None:
                exhausted = True
                break
            pending.add(submit(args))
        if not pending:
            return
        done, pending = wait_some(pending)
        for fut in done:
            yield result(fut)


def run_local(
    fn: Callable[..., Any],
    items: Iterable[tuple[Any, ...]],
    jobs: int,
    close_in_workers: tuple[tuple[int, int, int], ...] = (),
) -> Iterator[Any]:
    """``fn(*args)`` for each item on ``jobs`` processes (in this process for ``jobs = 1``)."""
    if jobs <= 1:
        for args in items:
            yield fn(*args)
        return
    ex = ProcessPoolExecutor(
        max_workers=jobs,
        initializer=_worker_init,
        initargs=(os.getpid(), close_in_workers),
    )
    try:

        def wait_some(pending: set[Future[Any]]) -> tuple[set[Any], set[Any]]:
            done, rest = wait(pending, return_when=FIRST_COMPLETED)
            return set(done), set(rest)

        yield from _windowed(
            lambda args: ex.submit(fn, *args),
            wait_some,
            lambda fut: fut.result(),
            items,
            jobs * WINDOW_PER_WORKER,
        )
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def run_dask(
    fn: Callable[..., Any], items: Iterable[tuple[Any, ...]], jobs: int, address: str | None
) -> Iterator[Any]:
    """``fn(*args)`` for each item on a Dask cluster (a LocalCluster without ``address``)."""
    distributed = _require("distributed", "dask")
    cluster = None
    if address is None:
        cluster = distributed.LocalCluster(
            n_workers=max(jobs, 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,  # logging.ERROR: the progress bar is the sweep's only chatter
        )
        client = distributed.Client(cluster)
    else:
        try:
            client = distributed.Client(address, timeout=10)
        except OSError as err:
            raise ConfigError(
                f"--address {address}: cannot reach a Dask scheduler there ({err})"
            ) from err
    try:
        workers = max(len(client.scheduler_info().get("workers", {})), 1)

        def wait_some(pending: set[Any]) -> tuple[set[Any], set[Any]]:
            res = distributed.wait(list(pending), return_when="FIRST_COMPLETED")
            return set(res.done), set(res.not_done)

        yield from _windowed(
            lambda args: client.submit(fn, *args, pure=False),
            wait_some,
            lambda fut: fut.result(),
            items,
            workers * WINDOW_PER_WORKER,
        )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_ray(
    fn: Callable[..., Any], items: Iterable[tuple[Any, ...]], jobs: int, address: str | None
) -> Iterator[Any]:
    """``fn(*args)`` for each item as Ray tasks (a local Ray without ``address``)."""
    ray = _require("ray", "ray")
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": address, "log_to_driver": False}
        if address is None:
            kwargs["num_cpus"] = max(jobs, 1)
        try:
            ray.init(**kwargs)
        except ConnectionError as err:
            raise ConfigError(f"--address {address}: cannot reach a Ray cluster ({err})") from err
        started = True
    try:
        remote = ray.remote(fn)
        workers = max(int(ray.cluster_resources().get("CPU", 1)), 1)

        def wait_some(pending: set[Any]) -> tuple[set[Any], set[Any]]:
            done, rest = ray.wait(list(pending), num_returns=1)
            return set(done), set(rest)

        yield from _windowed(
            lambda args: remote.remote(*args),
            wait_some,
            ray.get,
            items,
            workers * WINDOW_PER_WORKER,
        )
    finally:
        if started:
            ray.shutdown()


def _require(module: str, extra: str) -> Any:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"--executor {extra}: the {module} package is not installed; "
            f'pip install -e ".[{extra}]" (or use --executor local)'
        )
    return importlib.import_module(module)


def run_all(
    fn: Callable[..., Any],
    items: Iterable[tuple[Any, ...]],
    executor: str = "local",
    jobs: int = 1,
    address: str | None = None,
    close_in_workers: tuple[tuple[int, int, int], ...] = (),
) -> Iterator[Any]:
    """Dispatch to the named executor (ConfigError for an unknown name). ``close_in_workers``:
    (fd, st_dev, st_ino) of files local workers must not keep open (the locked journal)."""
    if executor == "local":
        if address is not None:
            raise ConfigError("--address: only for --executor dask or ray")
        return run_local(fn, items, jobs, close_in_workers)
    if executor == "dask":
        return run_dask(fn, items, jobs, address)
    if executor == "ray":
        return run_ray(fn, items, jobs, address)
    raise ConfigError(f"--executor {executor!r}: valid choices: {', '.join(EXECUTORS)}")
