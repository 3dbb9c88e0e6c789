"""Reading Relax modules (TVM): conv calls as ConvSpecs, their weights, their shapes.

Any frontend's module will do (TVM's ONNX, PyTorch or ``relax.frontend.nn`` frontends, or a
BlockBuilder): a conv is a ``relax.nn.conv{1,2,3}d`` or ``conv{1,2}d_transpose`` call in the
channels-first layouts. Symbolic extents (a batch ``n``) are ``None`` in the ConvSpec, as dynamic
ONNX dims are; the channel counts and the kernel must be static. TVM is imported only when one
of these is called.
"""

from __future__ import annotations

from ..conv import ConvSpec
from ..decline import Decline

# op name -> (ONNX op type, rank, data layout, kernel layout)
RELAX_CONVS = {
    "relax.nn.conv1d": ("Conv", 1, "NCW", "OIW"),
    "relax.nn.conv2d": ("Conv", 2, "NCHW", "OIHW"),
    "relax.nn.conv3d": ("Conv", 3, "NCDHW", "OIDHW"),
    "relax.nn.conv1d_transpose": ("ConvTranspose", 1, "NCW", "IOW"),
    "relax.nn.conv2d_transpose": ("ConvTranspose", 2, "NCHW", "IOHW"),
}


def op_name(expr) -> str | None:
    return getattr(getattr(expr, "op", None), "name", None)


def is_conv(expr) -> bool:
    return op_name(expr) in RELAX_CONVS


def dims(expr) -> tuple[int | None, ...] | None:
    """The expression's shape, ``None`` for each symbolic extent; None when the rank is unknown."""
    shape = getattr(expr.ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    out = []
    for d in shape.values:
        try:
            out.append(int(d))
        except TypeError:
            out.append(None)
    return tuple(out)


def constant_value(expr):
    """The numpy value of a Relax constant, else None."""
    import tvm
    if not isinstance(expr, tvm.ir.expr.Constant):
        return None
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None


def conv_attrs(call) -> dict:
    """The call's attributes in ONNX's spelling (what a ConvSite carries)."""
    a = call.attrs
    attrs = {"kernel_shape": list(dims(call.args[1])[2:]), "strides": [int(s) for s in a.strides],
             "pads": [int(p) for p in a.padding], "dilations": [int(d) for d in a.dilation],
             "group": int(a.groups)}
    if RELAX_CONVS[op_name(call)][0] == "ConvTranspose":
        attrs["output_padding"] = [int(p) for p in a.output_padding]
    return attrs


def conv_spec_of(call, name: str = "") -> ConvSpec | Decline:
    """The ConvSpec of a Relax conv or transposed conv, or why there is none."""
    if not is_conv(call):
        return Decline("not a conv")
    op_type, rank, data_layout, kernel_layout = RELAX_CONVS[op_name(call)]
    a = call.attrs
    if (a.data_layout, a.kernel_layout) != (data_layout, kernel_layout) \
            or a.out_layout != a.data_layout:
        return Decline(f"layouts {a.data_layout}/{a.kernel_layout} are not channels-first")
    x_shape, w_shape = dims(call.args[0]), dims(call.args[1])
    if x_shape is None or w_shape is None or len(x_shape) != rank + 2:
        return Decline("the input's rank is unknown")
    if None in w_shape or x_shape[1] is None:
        return Decline("the weight's shape or the input's channels are symbolic")
    dtype = str(call.args[0].ty.dtype)
    if str(call.ty.dtype) != dtype:
        return Decline(f"out_dtype {call.ty.dtype} differs from the input's {dtype}")
    groups = int(a.groups)
    if op_type == "ConvTranspose":
        cin, cout = w_shape[0], w_shape[1] * groups
    else:
        cout, cin = w_shape[0], w_shape[1] * groups
    attrs = conv_attrs(call)
    return ConvSpec(
        name=name, op_type=op_type, in_channels=cin, out_channels=cout, groups=groups,
        kernel_shape=tuple(w_shape[2:]), strides=tuple(attrs["strides"]),
        dilations=tuple(attrs["dilations"]), pads=tuple(attrs["pads"]),
        output_padding=tuple(attrs.get("output_padding", ())), input_shape=x_shape,
        output_shape=dims(call), dtype=dtype,
        constant_weight=constant_value(call.args[1]) is not None)
