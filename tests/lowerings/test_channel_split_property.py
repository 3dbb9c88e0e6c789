"""Property: for any conv and any channel limits, the split result fits the limits and computes the
same function on onnxruntime (checked here, independently of convrewrite's own verifier)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convrewrite as cr
from tests.conv_cases import conv_model, random_input, run


@st.composite
def conv_and_target(draw):
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    groups = draw(st.sampled_from([1, 1, 2, 3, 4]))
    depthwise = draw(st.booleans()) and groups > 1
    cin = groups if depthwise else groups * draw(st.integers(1, 12))
    if depthwise:
        cin = groups * draw(st.integers(1, 4))
        groups = cin
    cout = groups * draw(st.integers(1, 8 if groups < 8 else 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    strides = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(2 * rank))
    # every spatial extent at least the dilated kernel, so the conv has an output at all
    spatial = tuple(draw(st.integers((k - 1) * d + 1, (k - 1) * d + (4 if rank == 3 else 8)))
                    for k, d in zip(kernel, dilations))
    weight_form = draw(st.sampled_from(["initializer", "initializer", "constant", "qdq_channel"]))
    op = draw(st.sampled_from(["Conv", "Conv", "Conv", "ConvTranspose"]))
    model = conv_model(op=op, cin=cin, cout=cout, kernel=kernel, groups=groups, strides=strides,
                       dilations=dilations, pads=pads if op == "Conv" else None,
                       spatial=spatial, bias=draw(st.booleans()), weight_form=weight_form,
                       seed=draw(st.integers(0, 1000)))
    target = {"name": "random", "conv": {
        "max_in_channels": draw(st.integers(1, cin + 2)),
        "max_out_channels": draw(st.integers(1, cout + 2)),
        "channel_align": draw(st.sampled_from([1, 1, 2, 4, 8])),
    }, "rewrite": {"accumulate": draw(st.sampled_from(["chain", "tree"])),
                   "input_split": draw(st.sampled_from(["split", "slice"]))}}
    return model, target


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(conv_and_target())
def test_split_fits_and_matches(case):
    model, target = case
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    assert not cr.check(out, target).remaining
    feeds = random_input(model, seed=3)
    ref, got = run(model, feeds)[0], run(out, feeds)[0]
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, atol=2e-5 * scale, rtol=1e-4)
    for record in report.records:
        assert record.verify["passed"]
        if record.tolerance == "exact":     # an output-channel split changes no arithmetic
            assert record.verify["max_abs"] <= 1e-6 * scale
