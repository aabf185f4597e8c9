"""The weight-loop thread pool: serial order, errors, windows and the thread setting."""

from __future__ import annotations

import threading

import pytest

from onnxcompress._parallel import THREADS_ENV, parallel_map, windows, workers
from onnxcompress.errors import InputError


def test_results_keep_the_input_order(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "4")
    names = set()

    def square(x):
        names.add(threading.current_thread().name)
        return x * x

    assert parallel_map(square, list(range(50))) == [x * x for x in range(50)]
    assert any(n.startswith("onnxcompress") for n in names)


def test_one_thread_runs_in_the_caller(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")
    seen = []
    parallel_map(lambda x: seen.append(threading.current_thread() is threading.main_thread()), [1, 2, 3])
    assert seen == [True, True, True]


def test_first_error_is_raised(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")

    def fail_on_3(x):
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        parallel_map(fail_on_3, list(range(10)))


def test_windows_default_to_twice_the_threads(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    assert [len(w) for w in windows(range(10))] == [4, 4, 2]
    assert list(windows([], 3)) == []
    assert list(windows("abcde", 2)) == [["a", "b"], ["c", "d"], ["e"]]


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_is_an_input_error(monkeypatch, bad):
    monkeypatch.setenv(THREADS_ENV, bad)
    with pytest.raises(InputError, match=THREADS_ENV):
        workers()


def test_default_is_between_1_and_8(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert 1 <= workers() <= 8


def test_the_threads_are_reused_across_calls(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    threads = set()

    def who(x):
        threads.add(threading.current_thread())  # the objects, not their ids, which the OS reuses
        return x

    for _ in range(20):
        parallel_map(who, [1, 2, 3, 4])
    assert 1 <= len(threads) <= 2


def test_a_call_from_inside_the_pool_runs_serially(monkeypatch):
    """Waiting on the pool from one of its own threads could deadlock; it runs in that thread."""
    monkeypatch.setenv(THREADS_ENV, "2")

    def inner(x):
        here = threading.get_ident()
        return parallel_map(lambda y: (y, threading.get_ident() == here), [x, x + 1, x + 2])

    out = parallel_map(inner, [0, 10, 20, 30])
    assert [[y for y, _ in r] for r in out] == [[0, 1, 2], [10, 11, 12], [20, 21, 22], [30, 31, 32]]
    assert all(same for r in out for _, same in r)


def test_after_an_error_the_rest_is_cancelled_and_the_running_ones_finish(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    started, finished = [], []
    gate = threading.Event()

    def job(x):
        started.append(x)
        if x == 0:
            gate.wait(5)
            raise ValueError("zero")
        if x == 1:
            gate.set()
        threading.Event().wait(0.05)
        finished.append(x)
        return x

    with pytest.raises(ValueError, match="zero"):
        parallel_map(job, list(range(50)))
    assert 1 in finished and len(started) < 50
    assert sorted(finished) == sorted(x for x in started if x != 0)
