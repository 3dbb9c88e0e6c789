"""The model builders give valid, deterministic, numerically sane models of the right topology."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from convrewrite.models import (BUILDERS, conv1d_net, conv3d_net, demo_wide, mobilenet_v2,
                                resnet50)
from convrewrite.models.builder import GraphBuilder
from convrewrite.ops.reference import has_own_ops, standard_reference
from tests.conv_cases import op_count, random_input, run

# Smaller images where the topology allows, to keep the run checks fast; ResNet-50 runs at its
# real 224x224 once (~70 ms), in test_builder.
SMALL = {
    "resnet18": dict(image_size=64),
    "vgg16": dict(image_size=32),
    "mobilenet_v2": dict(image_size=64),
    "shufflenet_v2": dict(image_size=64),
}
CONVS = {"resnet50": 53, "resnet18": 20, "vgg16": 13, "mobilenet_v2": 52, "demo_wide": 8,
         "conv1d_net": 4, "conv3d_net": 4, "deeplab_head": 6, "unet": 14, "dcgan_generator": 4,
         "big_kernel_net": 4, "shufflenet_v2": 56, "resnext_block": 6, "shift_resnet": 4,
         "channelnet_block": 3, "depth_multiplier_net": 4}
OUTPUT_SHAPES = {"resnet50": (1, 1000), "resnet18": (1, 1000), "vgg16": (1, 1000),
                 "mobilenet_v2": (1, 1000), "demo_wide": (1, 10), "conv1d_net": (1, 12),
                 "conv3d_net": (1, 5), "deeplab_head": (1, 21, 33, 33), "unet": (1, 2, 64, 64),
                 "dcgan_generator": (1, 3, 32, 32), "big_kernel_net": (1, 10),
                 "shufflenet_v2": (1, 1000), "resnext_block": (1, 256, 28, 28),
                 "shift_resnet": (1, 64, 32, 32), "channelnet_block": (1, 64, 16, 16),
                 "depth_multiplier_net": (1, 32, 16, 16)}
FLOAT16 = {"resnet50": dict(image_size=64), "mobilenet_v2": dict(image_size=64), "demo_wide": {},
           "conv1d_net": {}, "conv3d_net": {}}


def conv_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Conv"]


def attr(node: onnx.NodeProto, name: str, default=None):
    found = [onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name]
    return found[0] if found else default


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder(name):
    build = lambda: BUILDERS[name](**SMALL.get(name, {}))         # noqa: E731
    model = build()
    own_ops = has_own_ops(model)        # shape inference cannot see through our domain's ops
    onnx.checker.check_model(model, full_check=not own_ops)
    assert op_count(model, "Conv") + op_count(model, "ConvTranspose") == CONVS[name]
    (out,) = run(standard_reference(model), random_input(model))
    assert out.shape == OUTPUT_SHAPES[name]
    assert np.isfinite(out).all()
    assert 1e-2 < float(out.std()) < 1e2          # weights scaled so activations stay O(1)
    assert build().SerializeToString() == model.SerializeToString()     # deterministic


def test_seed_changes_weights_not_topology():
    a, b = conv1d_net(seed=0), conv1d_net(seed=1)
    assert [n.name for n in a.graph.node] == [n.name for n in b.graph.node]
    assert not np.array_equal(weights(a)["conv1.weight"], weights(b)["conv1.weight"])


def test_resnet50_names_and_widths():
    model = resnet50(image_size=32)
    names = {n.name for n in model.graph.node}
    assert {"conv1", "layer1.0/conv1", "layer1.0/downsample", "layer4.2/conv3", "fc"} <= names
    assert "layer1.1/downsample" not in names               # identity shortcut
    w = weights(model)
    assert w["layer2.0/conv2.weight"].shape == (128, 128, 3, 3)
    assert attr(next(n for n in conv_nodes(model) if n.name == "layer2.0/conv2"),
                "strides") == [2, 2]                        # v1.5: stride on the 3x3
    assert max(v.shape[0] for v in w.values() if v.ndim == 4) == 2048


def test_mobilenet_depthwise_and_residuals():
    model = mobilenet_v2(image_size=64)
    depthwise = [n for n in conv_nodes(model) if attr(n, "group", 1) > 1]
    assert len(depthwise) == 17
    assert max(attr(n, "group") for n in depthwise) == 960
    assert op_count(model, "Add") == 10          # stride 1 and in == out channels
    assert op_count(model, "Clip") == 35         # ReLU6 after every conv but the projections


def test_dynamic_batch():
    model = resnet50(image_size=32, dynamic_batch=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    feeds = random_input(model, batch=2)
    (out,) = run(model, feeds)
    assert out.shape == (2, 1000)
    (first,) = run(model, {k: v[:1] for k, v in feeds.items()})
    np.testing.assert_allclose(out[:1], first, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(FLOAT16))
def test_float16(name):
    """float16 is the float32 model with every weight and the input rounded."""
    full = BUILDERS[name](**FLOAT16[name])
    half = BUILDERS[name](**FLOAT16[name], dtype="float16")
    onnx.checker.check_model(half, full_check=True)
    assert all(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    feeds = random_input(full)
    (ref,) = run(full, feeds)
    (out,) = run(half, {k: v.astype(np.float16) for k, v in feeds.items()})
    assert out.dtype == np.float16 and np.isfinite(out).all()
    assert np.abs(out.astype(np.float32) - ref).max() < 0.02 * ref.std()


def test_demo_wide_has_what_it_demonstrates():
    model = demo_wide()
    w = weights(model)
    convs = {n.name: (attr(n, "group", 1), w[n.input[1]].shape) for n in conv_nodes(model)}
    cin = {name: g * shape[1] for name, (g, shape) in convs.items()}
    assert max(cin.values()) == 2048
    assert max(shape[0] for _, shape in convs.values()) > 1024
    assert convs["stage2/grouped"] == (4, (1536, 384, 3, 3))    # groups wider than 256
    assert convs["stage2/depthwise"] == (1536, (1536, 1, 3, 3))
    assert {shape[2:] for _, shape in convs.values()} == {(1, 1), (3, 3)}
    assert op_count(model, "Add") == 1


@pytest.mark.parametrize("build", [demo_wide, conv1d_net, conv3d_net])
def test_small_nets_stay_small(build):
    assert sum(v.nbytes for v in weights(build()).values()) < 60e6


@pytest.mark.parametrize("spatial, kernel, stride, pad, dilation", [
    ((100,), 5, 2, None, 1),
    ((17, 23), (3, 5), (2, 1), None, 1),
    ((17, 23), 3, 1, (0, 2), 2),
    ((16, 16), 2, 2, 0, 1),
    ((9, 10), (3, 5), 1, None, (2, 1)),
    ((8, 16, 15), 3, (1, 2, 2), None, (1, 1, 2)),
])
def test_builder_tracks_shapes(spatial, kernel, stride, pad, dilation):
    """The sizes the builder reports are the sizes ONNX shape inference gives."""
    g = GraphBuilder("shapes")
    x = g.input("x", 8, spatial, 1)
    y = g.conv(x, 12, kernel, stride, pad, dilation, groups=4, name="conv")
    z = g.maxpool(g.relu(y, "relu"), 2, 2, 0, "pool")
    both = g.concat([z, g.conv(z, 4, 1, name="side")], "concat")
    g.output(both, "y")
    model = g.build()
    inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
    shape_of = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred}
    for t in (y, z, both):
        assert shape_of[t.name] == [1, t.channels, *t.spatial]
    if pad is None and stride == 1:
        assert y.spatial == tuple(spatial)           # the default pad keeps odd kernels "same"


def test_builder_rejects_what_it_cannot_build():
    with pytest.raises(ValueError, match="float"):
        GraphBuilder("bad", dtype="int8")
    g = GraphBuilder("bad")
    with pytest.raises(ValueError, match="groups=4"):
        g.conv(g.input("x", 6, (8, 8), 1), 8, groups=4, name="conv")
