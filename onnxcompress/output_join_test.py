"""OutputJoin gives concat_outputs' arrays, value, shape, dtype and strides, one chunk at a time."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.output_join import OutputJoin, concat_outputs


def _joined(chunks, batches):
    join = OutputJoin(batches)
    for c in chunks:
        join.add(c)
    return join.result()


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert a[k].strides == b[k].strides, k
        np.testing.assert_array_equal(a[k], b[k])


def _chunks(rng, batches, make):
    return [make(rng, b) for b in batches]


CASES = {
    # batch-first outputs of several dtypes, and a ragged last batch
    "batch first": ([4, 4, 3], lambda r, b: {"y": r.normal(size=(b, 5, 7)).astype(np.float32),
                                              "ids": r.integers(0, 9, (b, 5))}),
    # a time-major CTC head (T, N, C): joined on axis 1, returned (N, T, C)
    "time major": ([4, 4, 2], lambda r, b: {"ctc": r.normal(size=(6, b, 3)).astype(np.float32)}),
    # T equals the batch in every full batch: axis 0 fits the first chunk, the ragged one moves it to axis 1
    "axis moves": ([4, 4, 2], lambda r, b: {"ctc": r.normal(size=(4, b, 3)).astype(np.float32)}),
    # an output without a batch axis keeps its first chunk
    "no batch axis": ([4, 4], lambda r, b: {"y": r.normal(size=(b, 2)), "shape": np.array([7, 9, 11])}),
    # a scalar output
    "scalar": ([2, 2], lambda r, b: {"s": np.float32(r.normal()), "y": r.normal(size=(b,))}),
    # a single batch: concat_outputs copies it
    "one batch": ([5], lambda r, b: {"y": r.normal(size=(b, 3)).astype(np.float32)}),
    # a fixed-size output whose size is the first batch's only: no batch axis, the first chunk itself
    "fixed size": ([4, 4, 3], lambda r, b: {"y": r.normal(size=(b, 2)), "table": np.arange(8.0).reshape(2, 4)}),
    # the first chunk is not C-contiguous (a transposed view)
    "transposed": ([3, 3], lambda r, b: {"y": r.normal(size=(4, b)).astype(np.float32).T}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_chunk_at_a_time_gives_concat_outputs_arrays(case):
    batches, make = CASES[case]
    chunks = _chunks(np.random.default_rng(0), batches, make)
    want = concat_outputs(chunks, batches)
    _same(_joined(chunks, batches), want)


def test_an_output_without_a_batch_axis_is_the_first_chunk_itself():
    first = np.arange(8.0).reshape(2, 4)
    chunks = [{"table": first}, {"table": first + 1}, {"table": first + 2}]  # axis 1 is 4, the last batch 3
    got = _joined(chunks, [4, 4, 3])["table"]
    assert got is first and concat_outputs(chunks, [4, 4, 3])["table"] is first


def test_the_joined_array_is_made_once_and_not_a_chunk():
    rng = np.random.default_rng(1)
    chunks = [{"y": rng.normal(size=(4, 3)).astype(np.float32)} for _ in range(3)]
    got = _joined(chunks, [4, 4, 4])["y"]
    assert got.shape == (12, 3) and got.flags.c_contiguous
    assert not any(np.shares_memory(got, c["y"]) for c in chunks)
    np.testing.assert_array_equal(got[4:8], chunks[1]["y"])


def test_a_later_chunk_of_another_dtype_or_order_is_joined_as_concatenate_does():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, 3)).astype(np.float32)
    b = rng.normal(size=(3, 2)).T.copy().astype(np.float64)  # another dtype
    c = np.asfortranarray(rng.normal(size=(2, 3)).astype(np.float32))  # not C-contiguous
    for chunks in ([{"y": a}, {"y": b}], [{"y": a}, {"y": c}]):
        _same(_joined(chunks, [2, 2]), concat_outputs(chunks, [2, 2]))


def test_mismatched_dims_fail_as_concatenate_fails():
    chunks = [{"y": np.zeros((2, 3))}, {"y": np.zeros((2, 4))}]
    with pytest.raises(ValueError):
        concat_outputs(chunks, [2, 2])
    with pytest.raises(ValueError):
        _joined(chunks, [2, 2])


def test_a_missing_output_or_chunk_is_an_error_not_uninitialised_rows():
    join = OutputJoin([2, 2])
    join.add({"y": np.zeros((2, 3)), "z": np.zeros((2,))})
    with pytest.raises(KeyError):
        join.add({"y": np.zeros((2, 3))})
    join = OutputJoin([2, 2])
    join.add({"y": np.zeros((2, 3))})
    with pytest.raises(ValueError):
        join.result()
    join.add({"y": np.ones((2, 3))})
    with pytest.raises(ValueError):
        join.add({"y": np.ones((2, 3))})
