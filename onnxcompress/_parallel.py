"""Run numpy work on many weights in threads: numpy releases the GIL inside its loops.

The heavy steps on a big model (BatchNorm folding, filter norms, slicing the weights) touch
every weight once, a layer at a time, and the layers are independent. On the 2-core machine
of ``bench/SCALE.md`` two threads fold the 2.3 GB model's BatchNorms in 0.57 s instead of
1.07 s. The results and their order are those of the serial loop.

``ONNXCOMPRESS_THREADS=N`` sets the number of threads (1 runs everything in the caller's
thread); the default is the number of CPUs this process may use, at most 8. The threads are
started once per process and reused: a ResNet-50 run maps about 40 lists, and starting their
threads anew each time cost 1-2 ms a thread on this VM.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

from onnxcompress.errors import InputError

THREADS_ENV = "ONNXCOMPRESS_THREADS"
_MAX_DEFAULT = 8
_PREFIX = "onnxcompress"
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()

T = TypeVar("T")
R = TypeVar("R")


def workers() -> int:
    """How many threads the weight loops use."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise InputError(f"{THREADS_ENV} must be a whole number >= 1, not {raw!r}")
        return int(raw)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _MAX_DEFAULT))


def _block_signals() -> None:
    """Workers never receive Ctrl-C or SIGTERM: the kernel hands them to the main thread.

    A signal delivered to a worker cut its reads short (a weight came back empty and the
    run ended in an internal error, not exit 130); Python handles signals in the main
    thread only, so the worker has nothing to do with one.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _pool(n: int) -> ThreadPoolExecutor:
    """The process's pool of ``n`` threads, started on first use."""
    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix=_PREFIX, initializer=_block_signals)
        return pool


if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads: it starts its own
    os.register_at_fork(after_in_child=_POOLS.clear)


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, run on ``workers()`` threads; the first exception is raised.

    On an exception or Ctrl-C the tasks not yet started are cancelled, and the running ones
    finish before it propagates. Called from one of the pool's own threads, it runs serially
    (waiting on the pool from inside it could deadlock).
    """
    n = workers()
    if n == 1 or len(items) < 2 or threading.current_thread().name.startswith(_PREFIX):
        return [fn(x) for x in items]
    pool = _pool(n)
    futures = [pool.submit(fn, x) for x in items]
    try:
        return [f.result() for f in futures]
    finally:
        for f in futures:
            f.cancel()
        wait(futures)


def windows(items: Iterable[T], size: int | None = None, weight=None, max_weight: float = float("inf")
            ) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (default: twice the thread count), and, with ``weight(item)``,
    of at most ``max_weight`` in total (an item heavier than that goes alone).

    Callers compute a window in parallel and then write it, so at most one window of new
    arrays is held beside the old ones.
    """
    size = size or 2 * workers()
    batch: list[T] = []
    held = 0.0
    for x in items:
        w = weight(x) if weight is not None else 0.0
        if batch and held + w > max_weight:
            yield batch
            batch, held = [], 0.0
        batch.append(x)
        held += w
        if len(batch) == size:
            yield batch
            batch, held = [], 0.0
    if batch:
        yield batch
