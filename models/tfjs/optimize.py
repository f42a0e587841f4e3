"""Fold per-channel constant scales and shifts into the convolution before them.

Graphs exported through ONNX or from Keras often keep a bias add, or a batch norm's
multiply and add, as separate ops after a bias-free convolution (NanoDet: Conv2D + Add;
faceres: Conv2D + Mul + Add). Each is a full pass over the activations; folded into the
conv's weight and bias they cost nothing. A fold happens only where the conv's output has
no other reader and the constant is one value per output channel (or a scalar), so the
result is the same function up to float rounding.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from models.tfjs import ops_math


def _channel_constant(module: fx.GraphModule, arg: object, channels: int) -> torch.Tensor | None:
    """``arg`` as a [channels] tensor if it is a scalar or a [1, C, 1, 1]-shaped constant."""
    if isinstance(arg, float):
        return torch.full((channels,), arg)
    if not (isinstance(arg, fx.Node) and arg.op == "get_attr"):
        return None
    value = getattr(module, str(arg.target))
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return None
    if value.numel() == 1:
        return value.reshape(1).expand(channels).clone()
    if value.dim() == 4 and tuple(value.shape) == (1, channels, 1, 1):
        return value.reshape(channels).clone()
    return None


def fold_into_convs(module: fx.GraphModule) -> int:
    """Fold Mul/Add by per-channel constants into the preceding conv; returns how many."""
    folded = 0
    changed = True
    while changed:
        changed = False
        for node in list(module.graph.nodes):
            if node.op != "call_function" or node.target not in (ops_math.add, ops_math.mul) or len(node.args) != 2:
                continue
            conv_node, other = node.args
            if not (isinstance(conv_node, fx.Node) and conv_node.op == "call_module") or len(conv_node.users) != 1:
                continue
            conv = module.get_submodule(str(conv_node.target))
            if not isinstance(conv, nn.Conv2d):
                continue
            constant = _channel_constant(module, other, conv.out_channels)
            if constant is None:
                continue
            with torch.no_grad():
                if conv.bias is None:
                    conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
                if node.target is ops_math.mul:
                    conv.weight.mul_(constant.reshape(-1, 1, 1, 1))
                    conv.bias.mul_(constant)
                else:
                    conv.bias.add_(constant)
            node.replace_all_uses_with(conv_node)
            module.graph.erase_node(node)
            folded += 1
            changed = True
    module.graph.eliminate_dead_code()
    for node in list(module.graph.nodes):  # constants nothing reads any more
        if node.op == "get_attr" and not node.users:
            module.graph.erase_node(node)
            delattr(module, str(node.target))
    module.recompile()
    return folded
