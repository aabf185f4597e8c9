from __future__ import annotations

from pathlib import Path

import onnx_ir as ir
import pytest

from onnxcompress.calib_batch_axis import check_shared_batch_axis
from onnxcompress.errors import InputError

SRC = Path("calib.npz")


def _value(name, dims):
    return ir.Value(name=name, shape=ir.Shape(dims), type=ir.TensorType(ir.DataType.FLOAT))


def test_two_fixed_first_axes_that_differ_are_refused():
    """silero-vad (OpenVINO export): (1, 576) audio beside a (2, 1, 128) LSTM state."""
    with pytest.raises(InputError, match=r"input 'state' has a first axis fixed at 2 and input 'input' at 1: "):
        check_shared_batch_axis([_value("input", [1, 576]), _value("state", [2, 1, 128])], SRC)


def test_a_later_axis_carrying_another_inputs_batch_is_refused():
    """A (2, N, 8) state beside (N, 2, 16) audio: the state's batch is its axis 1."""
    with pytest.raises(InputError, match=r"'state' has a first axis fixed at 2 and its later axes carry the batch of 'x'"):
        check_shared_batch_axis([_value("x", ["N", 2, 16]), _value("state", [2, "N", 8])], SRC)


@pytest.mark.parametrize("dims", [
    [[4, 8], ["N", 8]],  # a batch fixed on one input and free on another: fed as batches of 4, as before
    [["N", 3, 32, 32], ["N", 10]],  # a shared free batch
    [[1, 3, 32, 32], [1, 10]],  # a shared fixed batch of 1
    [[8, 3], [8, 5]],  # a shared fixed batch of 8
    [[4, None, 8], [None, 8]],  # unnamed dims say nothing about each other
])
def test_inputs_sharing_their_first_axis_pass(dims):
    check_shared_batch_axis([_value(f"in{i}", d) for i, d in enumerate(dims)], SRC)
