"""Converters for ops that move data around: reshape, transpose, concat, split, squeeze,
pad, resize, and the constant-only SparseToDense that ONNX-exported graphs use to build
reshape targets.

Dimension 0 is the batch everywhere: a reshape keeps it as the input's run-time size
(graphs exported at batch 1 write a literal 1 there), and ops that would move or merge
it are refused at load time rather than silently mixing photos.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.tfjs.builder import (
    NCHW_TO_NHWC,
    NHWC_TO_NCHW,
    ConversionError,
    GraphBuilder,
    Value,
    add_converter,
)
from models.tfjs.ops_conv import pad_nchw
from models.tfjs.reader import Node


def reshape_keep_batch(x: torch.Tensor, rest: tuple[int, ...]) -> torch.Tensor:
    return x.reshape(x.shape[0], *rest)


@add_converter("Reshape")
def convert_reshape(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    x, shape_value = inputs
    shape = builder.const_list(shape_value, "the target shape")
    x = builder.logical(x)
    if x.is_const:
        return builder.call(torch.reshape, x, tuple(shape))
    if not shape or shape[0] not in (1, -1, x.shape[0]):
        raise ConversionError(f"reshape to {shape} would change the batch dimension")
    return builder.call(reshape_keep_batch, x, tuple(shape[1:]))


@add_converter("Transpose")
def convert_transpose(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    x, perm_value = inputs
    perm = tuple(builder.const_list(perm_value, "the permutation"))
    if not x.is_const and perm[0] != 0:
        raise ConversionError(f"transpose {list(perm)} would move the batch dimension")
    # The two transposes an ONNX->TF export wraps around every op cost nothing here:
    # they only change which layout the stored tensor is said to have.
    if x.nchw and perm == NHWC_TO_NCHW:
        return Value(x.example, x.node, nchw=False)
    if not x.nchw and x.rank == 4 and perm == NCHW_TO_NHWC and not x.is_const:
        return Value(x.example, x.node, nchw=True)
    return builder.call(torch.permute, builder.logical(x), perm)


def concat(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    dtype = min((t.dtype for t in tensors if t.is_floating_point()), key=lambda d: torch.finfo(d).bits,
                default=tensors[0].dtype)
    return torch.cat([t.to(dtype) for t in tensors], dim=dim)


@add_converter("ConcatV2")
def convert_concat(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    *parts, axis_value = inputs
    (axis,) = builder.const_list(axis_value, "the concat axis")
    if any(p.nchw for p in parts) and all(p.rank == 4 for p in parts):
        parts = [builder.broadcast_nchw(p) for p in parts]
    else:
        parts = [builder.logical(p) for p in parts]
    if axis % parts[0].rank == 0 and not all(p.is_const for p in parts):
        raise ConversionError("concatenating along the batch dimension is not supported")
    return builder.call(concat, parts, builder.physical_axis(parts[0], axis), nchw=parts[0].nchw)


def split(x: torch.Tensor, sizes: list[int], dim: int) -> tuple[torch.Tensor, ...]:
    return torch.split(x, sizes, dim=dim)


@add_converter("SplitV", "Split")
def convert_split(builder: GraphBuilder, node: Node, inputs: list[Value]) -> list[Value]:
    if node.op == "Split":
        axis_value, x = inputs
        (axis,) = builder.const_list(axis_value, "the split axis")
        count = int(node.get("num_split"))
        sizes = [x.shape[axis] // count] * count
    else:
        x, sizes_value, axis_value = inputs
        (axis,) = builder.const_list(axis_value, "the split axis")
        sizes = builder.const_list(sizes_value, "the split sizes")
        if -1 in sizes:
            sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    if axis % x.rank == 0:
        raise ConversionError("splitting along the batch dimension is not supported")
    return builder.call_multi(split, x, sizes, builder.physical_axis(x, axis), nchw=x.nchw)


def squeeze(x: torch.Tensor, dims: list[int]) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = x.squeeze(d)
    return x


@add_converter("Squeeze")
def convert_squeeze(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    from models.tfjs.ops_math import drop_axes

    (x,) = inputs
    axes = node.get("squeeze_dims") or [i for i, d in enumerate(x.shape) if d == 1 and i > 0]
    axes = sorted(a % x.rank for a in axes)
    if 0 in axes:
        raise ConversionError("squeezing the batch dimension is not supported")
    return drop_axes(builder, x, axes, False, lambda v, dims: builder.call(squeeze, v, dims))


def pad(x: torch.Tensor, pads: list[int], value: float) -> torch.Tensor:
    return F.pad(x, pads, value=value)


@add_converter("Pad", "PadV2", "MirrorPad")
def convert_pad(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    x, pads_value = inputs[0], inputs[1]
    pairs = builder.const_list(pads_value, "the paddings")
    value = float(inputs[2].example) if len(inputs) > 2 else 0.0
    if node.op == "MirrorPad":
        raise ConversionError("MirrorPad is not supported")
    if pairs[0] or pairs[1]:
        raise ConversionError("padding the batch dimension is not supported")
    per_axis = [(pairs[2 * i], pairs[2 * i + 1]) for i in range(x.rank)]
    if x.nchw:  # logical NHWC stored NCHW: reorder the (before, after) pairs
        top, bottom = per_axis[1]
        left, right = per_axis[2]
        if per_axis[3] == (0, 0):
            return builder.call(pad_nchw, x, (top, bottom, left, right), value, nchw=True)
        per_axis = [per_axis[a] for a in NHWC_TO_NCHW]
    # F.pad takes (before, after) pairs from the last axis backwards.
    flat = [p for before_after in reversed(per_axis) for p in before_after]
    return builder.call(pad, x, flat, value, nchw=x.nchw)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="nearest-exact")


@add_converter("ResizeBilinear", "ResizeNearestNeighbor")
def convert_resize(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    x, size_value = inputs
    height, width = builder.const_list(size_value, "the output size")
    align_corners, half_pixel = bool(node.get("align_corners", False)), bool(node.get("half_pixel_centers", False))
    x = builder.channels_first(x)
    if node.op == "ResizeNearestNeighbor":
        if align_corners or not half_pixel:
            raise ConversionError("only half-pixel nearest-neighbour resizing is supported")
        return builder.call(resize_nearest, x, (height, width), nchw=True)
    if not align_corners and not half_pixel:
        raise ConversionError("legacy resizing (align_corners=false, half_pixel_centers=false) is not supported")
    return builder.call(resize_bilinear, x, (height, width), align_corners, nchw=True)


def sparse_to_dense(indices: torch.Tensor, shape: torch.Tensor, values: torch.Tensor,
                    default: torch.Tensor) -> torch.Tensor:
    dense = torch.full(tuple(int(s) for s in shape.reshape(-1).tolist()), default.item(), dtype=values.dtype)
    index = (indices.reshape(1, 1) if indices.dim() == 0 else indices.reshape(indices.shape[0], 1)
             if indices.dim() == 1 else indices).long()
    if index.numel():
        dense[tuple(index.t())] = values.expand(index.shape[0]) if values.dim() == 0 else values
    return dense


@add_converter("SparseToDense")
def convert_sparse_to_dense(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    if not all(v.is_const for v in inputs):
        raise ConversionError("only constant inputs are supported")
    return builder.call(sparse_to_dense, *inputs)


def cast_float(x: torch.Tensor) -> torch.Tensor:
    return x.float()


@add_converter("Cast")
def convert_cast(builder: GraphBuilder, node: Node, inputs: list[Value]) -> Value:
    (x,) = inputs
    target = node.get("DstT")
    if target == "DT_FLOAT":
        return builder.call(cast_float, x, nchw=x.nchw)
    if target == "DT_INT32" and x.is_const:
        return builder.const(x.example.to(torch.int32))
    raise ConversionError(f"cast to {target} is not supported")
