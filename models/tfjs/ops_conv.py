"""Converters for convolutions, transposed convolutions, matmuls and pooling.

TF kernels are HWIO (depthwise: H, W, C, multiplier; transposed: H, W, out, in); they
become ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.Linear`` modules whose parameters
are the file's weights, so ``.to()``, channels-last and autocast treat them as usual.
TF's SAME padding may be asymmetric (the extra row/column goes after): symmetric SAME
becomes the conv's own padding, asymmetric an explicit ``F.pad`` in front.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.tfjs.builder import ConversionError, GraphBuilder, Value, add_converter
from models.tfjs.reader import Node

_FUSED_ACTIVATIONS = {"Relu": F.relu, "Relu6": lambda x: F.hardtanh(x, 0.0, 6.0), "Sigmoid": torch.sigmoid,
                      "Elu": F.elu, "Tanh": torch.tanh}


class _Shape:
    """Stands in for a Value where only a logical NHWC (height, width) is known."""

    def __init__(self, height: int, width: int) -> None:
        self.shape = (1, height, width, 1)


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF's SAME padding (before, after) of one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _spatial(node: Node, key: str, default: int) -> tuple[int, int]:
    values = node.get(key) or [default] * 4
    if node.get("data_format", "NHWC") == "NCHW":
        return values[2], values[3]
    return values[1], values[2]


def _paddings(node: Node, x: Value | _Shape, kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of a conv or pool."""
    padding = node.get("padding", "VALID")
    h, w = x.shape[1], x.shape[2]
    if padding == "VALID":
        return 0, 0, 0, 0
    if padding == "SAME":
        return (*same_padding(h, kernel[0], stride[0], dilation[0]),
                *same_padding(w, kernel[1], stride[1], dilation[1]))
    if padding == "EXPLICIT":
        p = node.get("explicit_paddings")
        return p[2], p[3], p[4], p[5]
    raise ConversionError(f"padding {padding!r} is not supported")


def _nchw_input(builder: GraphBuilder, node: Node, x: Value) -> Value:
    if node.get("data_format", "NHWC") not in ("NHWC", "NCHW"):
        raise ConversionError(f"data_format {node.get('data_format')!r} is not supported")
    if node.get("data_format", "NHWC") == "NCHW":
        raise ConversionError("data_format NCHW is not supported (TF.js graphs are NHWC)")
    return builder.channels_first(x)


def pad_nchw(x: torch.Tensor, pads: tuple[int, int, int, int], value: float) -> torch.Tensor:
    """Pad an NCHW tensor by (top, bottom, left, right)."""
    top, bottom, left, right = pads
    return F.pad(x, (left, right, top, bottom), value=value)


def _conv(builder: GraphBuilder, node: Node, x: Value, kernel: Value, bias: Value | None,
          depthwise: bool) -> Value:
    if kernel.rank != 4 or not kernel.is_const:
        raise ConversionError("the kernel must be a constant 4-d tensor")
    x = _nchw_input(builder, node, x)
    kh, kw, cin, cout = kernel.example.shape
    stride, dilation = _spatial(node, "strides", 1), _spatial(node, "dilations", 1)
    pads = _paddings(node, x, (kh, kw), stride, dilation)
    symmetric = pads[0] == pads[1] and pads[2] == pads[3]
    if not symmetric:
        x = builder.call(pad_nchw, x, pads, 0.0, nchw=True)
    channels = x.example.shape[1]
    if depthwise:
        groups, out_channels = cin, cin * cout
        weight = kernel.example.permute(2, 3, 0, 1).reshape(cin * cout, 1, kh, kw)
    else:
        if channels % cin:
            raise ConversionError(f"input has {channels} channels, kernel expects a multiple of {cin}")
        groups, out_channels = channels // cin, cout
        weight = kernel.example.permute(3, 2, 0, 1)
    conv = nn.Conv2d(channels, out_channels, (kh, kw), stride, (pads[0], pads[2]) if symmetric else 0,
                     dilation, groups, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias.example.reshape(-1))  # type: ignore[union-attr]
    return builder.module(node.name, conv, x)


def _fused(builder: GraphBuilder, node: Node, inputs: list[Value], depthwise: bool) -> Value:
    ops = node.get("fused_ops") or []
    if not ops or ops[0] != "BiasAdd" or len(inputs) != 3:
        raise ConversionError(f"fused ops {ops} are not supported (need BiasAdd first and one bias)")
    out = _conv(builder, node, inputs[0], inputs[1], inputs[2], depthwise)
    return _activation(builder, node, out, ops[1:])


def _activation(builder: GraphBuilder, node: Node, out: Value, ops: list[str]) -> Value:
    for op in ops:
        if op == "LeakyRelu":
            out = builder.call(F.leaky_relu, out, float(node.get("leakyrelu_alpha", 0.2)), nchw=out.nchw)
        elif op in _FUSED_ACTIVATIONS:
            out = builder.call(_FUSED_ACTIVATIONS[op], out, nchw=out.nchw)
        else:
            raise ConversionError(f"fused activation {op!r} is not supported")
    return out


@add_converter("Conv2D")
def convert_conv2d(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    return _conv(builder, node, inputs[0], inputs[1], None, depthwise=False)


@add_converter("DepthwiseConv2dNative")
def convert_depthwise(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    return _conv(builder, node, inputs[0], inputs[1], None, depthwise=True)


@add_converter("_FusedConv2D")
def convert_fused_conv2d(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    return _fused(builder, node, inputs, depthwise=False)


@add_converter("FusedDepthwiseConv2dNative")
def convert_fused_depthwise(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    return _fused(builder, node, inputs, depthwise=True)


def crop_nchw(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return x[:, :, top:top + height, left:left + width]


@add_converter("Conv2DBackpropInput")
def convert_conv_transpose(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    sizes_value, kernel, x = inputs
    sizes = builder.const_list(sizes_value, "the output size")
    x = _nchw_input(builder, node, x)
    kh, kw, cout, cin = kernel.example.shape
    stride, dilation = _spatial(node, "strides", 1), _spatial(node, "dilations", 1)
    if dilation != (1, 1):
        raise ConversionError("dilated transposed convolution is not supported")
    out_h, out_w = sizes[1], sizes[2]
    # The forward conv this op is the gradient of pads its input (our output) like this:
    top, _, left, _ = _paddings(node, _Shape(out_h, out_w), (kh, kw), stride, dilation)
    deconv = nn.ConvTranspose2d(cin, cout, (kh, kw), stride, bias=False)
    with torch.no_grad():
        deconv.weight.copy_(kernel.example.permute(3, 2, 0, 1))
    full = builder.module(node.name, deconv, x)
    return builder.call(crop_nchw, full, top, left, out_h, out_w, nchw=True)


@add_converter("MatMul", "_FusedMatMul")
def convert_matmul(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    x, kernel = inputs[0], inputs[1]
    if node.get("transpose_a", False) or x.rank != 2 or not kernel.is_const or kernel.rank != 2:
        raise ConversionError("only x @ constant kernel on 2-d x is supported")
    x = builder.logical(x)
    weight = kernel.example if node.get("transpose_b", False) else kernel.example.t()
    ops = node.get("fused_ops") or []
    if node.op == "_FusedMatMul" and (not ops or ops[0] != "BiasAdd" or len(inputs) != 3):
        raise ConversionError(f"fused ops {ops} are not supported")
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=node.op == "_FusedMatMul")
    with torch.no_grad():
        layer.weight.copy_(weight)
        if layer.bias is not None:
            layer.bias.copy_(inputs[2].example.reshape(-1))
    out = builder.module(node.name, layer, x, nchw=False)
    return _activation(builder, node, out, ops[1:])


def avg_pool_counted(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                     pads: tuple[int, int, int, int], counts: torch.Tensor) -> torch.Tensor:
    """Average pooling that, like TF's SAME, divides by the in-bounds cells only."""
    total = F.avg_pool2d(pad_nchw(x, pads, 0.0), kernel, stride) * (kernel[0] * kernel[1])
    return total / counts.to(total.dtype)


@add_converter("MaxPool", "AvgPool")
def convert_pool(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    x = _nchw_input(builder, node, inputs[0])
    kernel, stride = _spatial(node, "ksize", 1), _spatial(node, "strides", 1)
    pads = _paddings(node, x, kernel, stride, (1, 1))
    if node.op == "MaxPool":
        if any(pads):
            x = builder.call(pad_nchw, x, pads, float("-inf"), nchw=True)
        return builder.call(F.max_pool2d, x, kernel, stride, nchw=True)
    if not any(pads):
        return builder.call(F.avg_pool2d, x, kernel, stride, nchw=True)
    ones = torch.ones(1, 1, x.shape[1], x.shape[2])
    counts = F.avg_pool2d(pad_nchw(ones, pads, 0.0), kernel, stride) * (kernel[0] * kernel[1])
    return builder.call(avg_pool_counted, x, kernel, stride, pads, builder.const(counts), nchw=True)
