"""Run numpy work on many weights in threads: numpy releases the GIL inside its loops.

The heavy steps on a big model (BatchNorm folding, filter norms, slicing the weights) touch
every weight once, a layer at a time, and the layers are independent. On the 2-core machine
of ``bench/SCALE.md`` two threads fold the 2.3 GB model's BatchNorms in 0.57 s instead of
1.07 s. The results and their order are those of the serial loop.

``ONNXCOMPRESS_THREADS=N`` sets the number of threads (1 runs everything in the caller's
thread); the default is the number of CPUs this process may use, at most 8.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from onnxcompress.errors import InputError

THREADS_ENV = "ONNXCOMPRESS_THREADS"
_MAX_DEFAULT = 8

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


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, run on ``workers()`` threads; the first exception is raised.

    On an exception or Ctrl-C the tasks not yet started are cancelled (a running one finishes).
    """
    n = workers()
    if n == 1 or len(items) < 2:
        return [fn(x) for x in items]
    pool = ThreadPoolExecutor(max_workers=min(n, len(items)), thread_name_prefix="onnxcompress",
                              initializer=_block_signals)
    try:
        futures = [pool.submit(fn, x) for x in items]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
