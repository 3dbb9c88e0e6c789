"""Reading Vela's words and TFLite ops without running anything: the log formats of both cores
(copied from Vela 5.2 runs on the probes) and the MAC count per TFLite op."""

from __future__ import annotations

import pytest

from convrewrite.target import load_target
from convrewrite.errors import BadInputError
from convrewrite.vendors import vela
from convrewrite.vendors.tflite import calibration_set, last_error

REGOR_LOG = """\
Warning (supported operators) operator: CONV_2D, ofm: 'PartitionedCall:0'
Reason: The absolute sum of weight-tensor elements: 8325104 exceeds limit: 8323072
Weigth sum constraints:
  - IF 8-bit IFM:
    - The sum of absolute weights cannot exceed 8323072
CPU operators = 1 (50.0%)
   CPU: Passthrough = PartitionedCall:0 (outputs [1, 17, 21, 8])
"""

LEGACY_LOG = """\
Warning: CONV_2D 'PartitionedCall:0' is not supported on the NPU. Placing on CPU instead
 - Strides must fulfil the following criteria:
        - Stride h must be between 1 and 3 when ofm height is greater than 1
   Op has stride WxH as: 4x4, ifm shape as: [1, 34, 34, 16], ofm shape as: [1, 8, 8, 16]
Warning: RELU 'model/relu' is not supported on the NPU. Placing on CPU instead
 - IFM Tensor batch size must be 1
   Tensor 'serving_default_x:0' has batch size: 2

CPU operators = 2 (100.0%)
"""

REJECTION = """\
Traceback (most recent call last):
  File "vela.py", line 137, in process_regor
RuntimeError: Non-passthrough operation (Conv2D) could not run on NPU
"""


def test_regor_reason():
    assert vela.parse_reasons(REGOR_LOG) == {
        "PartitionedCall:0": "The absolute sum of weight-tensor elements: 8325104 exceeds "
                             "limit: 8323072"}


def test_legacy_reasons_keep_the_constraint_and_what_the_op_has():
    reasons = vela.parse_reasons(LEGACY_LOG)
    assert reasons["PartitionedCall:0"].startswith("Strides must fulfil")
    assert "Op has stride WxH as: 4x4" in reasons["PartitionedCall:0"]
    assert reasons["model/relu"] == ("IFM Tensor batch size must be 1; Tensor "
                                     "'serving_default_x:0' has batch size: 2")


def test_rejection_is_the_exception_message():
    assert vela._rejection(REJECTION) == "Non-passthrough operation (Conv2D) could not run on NPU"


def _t(shape):
    return {"name": "t", "shape": shape}


@pytest.mark.parametrize("op, macs", [
    ({"type": "CONV_2D", "inputs": [_t([1, 8, 8, 4]), _t([16, 3, 3, 4]), _t([16])],
      "outputs": [_t([1, 8, 8, 16])]}, 8 * 8 * 16 * 3 * 3 * 4),
    ({"type": "DEPTHWISE_CONV_2D", "inputs": [_t([1, 8, 8, 4]), _t([1, 3, 3, 8])],
      "outputs": [_t([1, 8, 8, 8])]}, 8 * 8 * 8 * 9),
    ({"type": "TRANSPOSE_CONV", "inputs": [_t([4]), _t([6, 2, 2, 4]), _t([1, 5, 5, 4])],
      "outputs": [_t([1, 10, 10, 6])]}, 25 * 4 * 2 * 2 * 6),
    ({"type": "FULLY_CONNECTED", "inputs": [_t([1, 32]), _t([10, 32])],
      "outputs": [_t([1, 10])]}, 320),
    ({"type": "RELU", "inputs": [_t([1, 4])], "outputs": [_t([1, 4])]}, 0),
])
def test_macs_per_tflite_op(op, macs):
    assert vela.op_macs(op) == macs


def test_calibration_is_channels_last_scaled_and_mapped_back():
    import numpy as np
    x = np.random.default_rng(0).uniform(-3, 5, (1, 3, 4, 5)).astype(np.float32)
    (data, mean, std), = calibration_set([{"x": x}]).values()
    assert data.shape == (1, 4, 5, 3) and data.min() >= 0 and data.max() <= 1
    np.testing.assert_allclose((data - mean) / std, np.moveaxis(x, 1, -1), atol=1e-5)


def test_integer_inputs_cannot_be_calibrated():
    import numpy as np
    with pytest.raises(BadInputError, match="calibrates float inputs"):
        calibration_set([{"ids": np.zeros((1, 4), np.int64)}])


def test_onnx2tf_error_line():
    log = ("\x1b[31mERROR:\x1b[0m onnx_op_name: conv\nTraceback...\n"
           "TypeError: Exception encountered when calling layer\n")
    assert last_error(log) == "onnx_op_name: conv: TypeError: Exception encountered when " \
                              "calling layer"


def test_targets_without_a_vendor_compiler_say_so():
    with pytest.raises(BadInputError, match="names no vendor compiler"):
        vela.vela_config(load_target("k210"))
    assert vela.vela_config(load_target("ethos-u55")) == ("ethos-u55-128", ())


def test_legacy_core_is_not_offered_for_u85():
    assert vela.cores_for("ethos-u85-256") == ("regor",)
    assert vela.cores_for("ethos-u55-128") == ("regor", "legacy")
