"""Converters for element-wise arithmetic, activations and reductions.

Binary ops keep the NCHW storage of their NHWC operands (constants are broadcast into
it), and cast a float constant to the dtype of the tensor it meets, so torch.autocast's
float16/bfloat16 is not promoted back to float32 by a float32 bias.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from models.tfjs.builder import ConversionError, GraphBuilder, Value, add_converter
from models.tfjs.reader import Node


def _same_float(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cast the wider of two float tensors to the narrower one's dtype (a Python float,
    which a scalar constant becomes, needs nothing)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return a, b
    if a.dtype != b.dtype and a.is_floating_point() and b.is_floating_point():
        if a.element_size() > b.element_size():
            return a.to(b.dtype), b
        return a, b.to(a.dtype)
    return a, b


def add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = _same_float(a, b)
    return a + b


def sub(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = _same_float(a, b)
    return a - b


def mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = _same_float(a, b)
    return a * b


def maximum(a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    if not isinstance(b, torch.Tensor):
        return torch.clamp_min(a, b)
    a, b = _same_float(a, b)
    return torch.maximum(a, b)


def minimum(a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    if not isinstance(b, torch.Tensor):
        return torch.clamp_max(a, b)
    a, b = _same_float(a, b)
    return torch.minimum(a, b)


_BINARY = {"Add": add, "AddV2": add, "BiasAdd": add, "Sub": sub, "Mul": mul, "Maximum": maximum,
           "Minimum": minimum}
_COMMUTATIVE = {"Add", "AddV2", "Mul", "Maximum", "Minimum"}


def _align(builder: GraphBuilder, values: list[Value]) -> list[Value]:
    """Operands in one storage: NCHW if any non-constant 4-d operand is stored so."""
    if any(v.nchw for v in values):
        return [builder.broadcast_nchw(v) for v in values]
    return values


@add_converter(*_BINARY)
def convert_binary(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    if len(inputs) != 2:
        raise ConversionError(f"expects 2 inputs, got {len(inputs)}")
    a, b = _align(builder, inputs)
    fn = _BINARY[node.op]
    # A scalar constant becomes a Python float in the graph: keep it on the right.
    if node.op in _COMMUTATIVE and a.is_const and not b.is_const:
        a, b = b, a
    nchw = a.nchw or b.nchw
    return builder.call(fn, a, b, nchw=nchw)


def add_n(*tensors: torch.Tensor) -> torch.Tensor:
    total = tensors[0]
    for t in tensors[1:]:
        total = add(total, t)
    return total


@add_converter("AddN")
def convert_add_n(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    values = _align(builder, inputs)
    values.sort(key=lambda v: v.is_const)  # a tensor first, so constants meet its dtype
    return builder.call(add_n, *values, nchw=any(v.nchw for v in values))


def relu6(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh(x, 0.0, 6.0)


def rsqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.rsqrt(x)


def square(x: torch.Tensor) -> torch.Tensor:
    return x * x


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"Relu": F.relu, "Relu6": relu6, "Sigmoid": torch.sigmoid, "Abs": torch.abs, "Rsqrt": rsqrt,
          "Square": square, "Tanh": torch.tanh, "Elu": F.elu, "Exp": torch.exp, "Neg": torch.neg}


@add_converter(*_UNARY)
def convert_unary(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    (x,) = inputs
    return builder.call(_UNARY[node.op], x, nchw=x.nchw)


@add_converter("LeakyRelu")
def convert_leaky_relu(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    (x,) = inputs
    return builder.call(F.leaky_relu, x, float(node.get("alpha", 0.2)), nchw=x.nchw)


@add_converter("Identity", "StopGradient", "NoOp")
def convert_identity(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    return inputs[0]


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.softmax(x, dim=dim)


@add_converter("Softmax")
def convert_softmax(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    (x,) = inputs
    return builder.call(softmax, x, builder.physical_axis(x, -1), nchw=x.nchw)


def reduce_mean(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.mean(x, dim=dims, keepdim=keepdim)


def reduce_sum(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.sum(x, dim=dims, keepdim=keepdim)


def reduce_max(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.amax(x, dim=dims, keepdim=keepdim)


_REDUCE = {"Mean": reduce_mean, "Sum": reduce_sum, "Max": reduce_max}


@add_converter(*_REDUCE)
def convert_reduce(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    x, axes_value = inputs
    axes = sorted({a % x.rank for a in builder.const_list(axes_value, "the reduction axes")})
    keep = bool(node.get("keep_dims", False))
    if 0 in axes:
        raise ConversionError("reducing over the batch axis is not supported")
    return drop_axes(builder, x, axes, keep, lambda v, dims: builder.call(_REDUCE[node.op], v, dims, keep,
                                                                          nchw=v.nchw and keep))


def drop_axes(builder: GraphBuilder, x: Value, axes: list[int], keep: bool, emit) -> Value:  # type: ignore[no-untyped-def]
    """Apply ``emit(x, physical dims)`` that removes (or keeps as 1) logical ``axes`` of
    ``x``; the result is put back in logical order when removing axes scrambles it."""
    dims = sorted(builder.physical_axis(x, a) for a in axes)
    out = emit(x, dims)
    if keep or not x.nchw:
        return out
    # Logical axes that remain, in their storage order, e.g. [0, 3] for NCHW minus H, W.
    remaining = [a for a in (0, 3, 1, 2) if a not in axes]
    if remaining == sorted(remaining):
        return out
    order = sorted(range(len(remaining)), key=lambda k: remaining[k])
    return builder.call(torch.permute, out, order)
