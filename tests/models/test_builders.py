"""The model builders give valid, deterministic, numerically sane models of the right topology."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from convrewrite.models import BUILDERS, mobilenet_v2, resnet18, resnet50, vgg16
from tests.conv_cases import op_count, random_input, run

SMALL = {
    "resnet50": lambda: resnet50(image_size=64),
    "resnet18": lambda: resnet18(image_size=64),
    "vgg16": lambda: vgg16(image_size=32),
    "mobilenet_v2": lambda: mobilenet_v2(image_size=64),
}
CONVS = {"resnet50": 53, "resnet18": 20, "vgg16": 13, "mobilenet_v2": 52, "demo_wide": 8,
         "conv1d_net": 4, "conv3d_net": 4, "deeplab_head": 6, "unet": 14, "dcgan_generator": 4,
         "big_kernel_net": 4}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder(name):
    build = SMALL.get(name, BUILDERS[name])
    model = build()
    onnx.checker.check_model(model, full_check=True)
    assert op_count(model, "Conv") + op_count(model, "ConvTranspose") == CONVS[name]
    (out,) = run(model, random_input(model))
    assert np.isfinite(out).all()
    assert 1e-3 < float(out.std()) < 1e3           # weights scaled so activations stay O(1)
    assert build().SerializeToString() == model.SerializeToString()     # deterministic


def test_depthwise_and_wide_convs_are_there():
    mobile = mobilenet_v2(image_size=64)
    depthwise = [n for n in mobile.graph.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) == 17
    widths = [onnx.numpy_helper.to_array(t).shape[0] for t in resnet50(image_size=32)
              .graph.initializer if t.name.endswith(".weight") and len(t.dims) == 4]
    assert max(widths) == 2048


def test_dynamic_batch():
    model = resnet50(image_size=32, dynamic_batch=True)
    (out,) = run(model, random_input(model, batch=2))
    assert out.shape == (2, 1000)
