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
