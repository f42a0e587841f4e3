"""Turn a parsed TF.js graph into a ``torch.fx.GraphModule``, one converter per op type.

The walk is onnx2torch's: visit nodes in dependency order, hand each to the converter
registered for its op (:func:`add_converter`), which emits torch calls through a
:class:`GraphBuilder`. Three things make the result fast and right:

- **Layout.** TF graphs are NHWC; torch convolutions want NCHW. A :class:`Value` whose
  ``nchw`` flag is set holds a *logical* NHWC tensor stored *physically* as NCHW, so a
  chain of convs and activations never transposes. Layout-sensitive ops (Reshape,
  Transpose, Concat/Split axes, reductions, Squeeze, Pad, Softmax) map their axes or
  materialise the logical layout. An NHWC input permuted to NCHW is a channels-last view,
  so NHWC models run channels-last without a copy.
- **Examples.** Every emitted call also runs once on an example batch (batch size 2,
  whatever the JSON says), so shapes are known while building, a graph that bakes in
  batch size 1 or has a weight of the wrong shape fails at load time, and calls whose
  inputs are all constants are folded into constants.
- **Errors.** Anything a converter raises becomes an :class:`UnsupportedModelError` or a
  :class:`ModelFileError` naming the op, the node and the file.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from models.tfjs.reader import GraphModel, Node
from pipeline.errors import ModelError, ModelFileError, UnsupportedModelError

EXAMPLE_BATCH = 2
"""Batch size of the example run at build time: not 1, so batch-1 assumptions surface."""
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)

Converter = Callable[["GraphBuilder", Node, list["Value"]], "Value | list[Value]"]
_CONVERTERS: dict[str, Converter] = {}


def add_converter(*op_types: str) -> Callable[[Converter], Converter]:
    """Register the decorated function as the converter of TF op types ``op_types``."""
    def register(fn: Converter) -> Converter:
        for op in op_types:
            _CONVERTERS[op] = fn
        return fn
    return register


def supported_ops() -> list[str]:
    """Every TF op type a converter is registered for."""
    _load_converters()
    return sorted(_CONVERTERS)


@dataclass(eq=False)
class Value:
    """One tensor of the graph while it is being built.

    ``example`` is the physical tensor on the example batch; ``node`` is its fx node, or
    None for a constant; ``nchw`` marks a logical NHWC tensor stored as NCHW.
    """

    example: torch.Tensor
    node: fx.Node | None = None
    nchw: bool = False

    @property
    def is_const(self) -> bool:
        return self.node is None

    @property
    def shape(self) -> tuple[int, ...]:
        """The logical (TF) shape on the example batch."""
        s = tuple(self.example.shape)
        return (s[0], s[2], s[3], s[1]) if self.nchw else s

    @property
    def rank(self) -> int:
        return self.example.dim()


class ConversionError(Exception):
    """Raised by converters for an unsupported attribute or input; becomes
    :class:`UnsupportedModelError` with the node and file added."""


class GraphBuilder:
    """Emits fx nodes and runs them on the example batch as it goes."""

    def __init__(self) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        # id(Value) -> (the Value, its node). The Value is kept alive so that its id is
        # never reused by a later constant during the build: keyed by id alone, a freed
        # constant's id came back for another one, and a 64-channel conv was wired to a
        # 32-channel bias (seen as a flaky FaceRes failure in the full test suite).
        self._const_nodes: dict[int, tuple[Value, fx.Node]] = {}
        self._names: set[str] = set()

    # -- values ---------------------------------------------------------------
    def const(self, tensor: torch.Tensor) -> Value:
        return Value(tensor)

    def placeholder(self, name: str, example: torch.Tensor) -> Value:
        return Value(example, self.graph.placeholder(self._unique(name)))

    def _fx_arg(self, value: Value) -> Any:
        if value.node is not None:
            return value.node
        if value.example.numel() == 1 and value.example.dim() == 0 and value.example.is_floating_point():
            return float(value.example)  # a scalar keeps autocast's dtype; a buffer would promote
        key = id(value)
        if key not in self._const_nodes:
            name = self._unique("const")
            self.root.register_buffer(name, value.example.contiguous())
            self._const_nodes[key] = (value, self.graph.get_attr(name))
        return self._const_nodes[key][1]

    def _unique(self, name: str) -> str:
        base = re.sub(r"\W", "_", name).strip("_") or "v"
        if base[0].isdigit():
            base = "n_" + base
        candidate, k = base, 1
        while candidate in self._names:
            candidate, k = f"{base}_{k}", k + 1
        self._names.add(candidate)
        return candidate

    # -- emitting -----------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, nchw: bool = False, **kwargs: Any) -> Value:
        """Emit ``fn(*args, **kwargs)``; Values among the (nested) args are its inputs.

        Folded to a constant when every input Value is constant.
        """
        result = fn(*_map_values(args, lambda v: v.example), **_map_values(kwargs, lambda v: v.example))
        if not isinstance(result, torch.Tensor):
            raise ConversionError(f"{getattr(fn, '__name__', fn)} did not give one tensor")
        if all(v.is_const for v in _values_in((args, kwargs))):
            return Value(result, None, nchw)
        node = self.graph.call_function(fn, _map_values(args, self._fx_arg), _map_values(kwargs, self._fx_arg))
        return Value(result, node, nchw)

    def call_multi(self, fn: Callable[..., Any], *args: Any, nchw: bool = False) -> list[Value]:
        """Emit ``fn(*args)`` where ``fn`` returns a sequence of tensors (e.g. a split)."""
        results = fn(*_map_values(args, lambda v: v.example))
        if all(v.is_const for v in _values_in(args)):
            return [Value(r, None, nchw) for r in results]
        node = self.graph.call_function(fn, _map_values(args, self._fx_arg))
        return [Value(r, self.graph.call_function(operator.getitem, (node, i)), nchw) for i, r in enumerate(results)]

    def module(self, name: str, module: nn.Module, x: Value, nchw: bool = True) -> Value:
        """Emit a call of a submodule (convolutions, so their weights are parameters)."""
        result = module(x.example)
        if x.is_const:
            return Value(result.detach(), None, nchw)
        target = self._unique(name)
        self.root.add_module(target, module)
        return Value(result, self.graph.call_module(target, (x.node,)), nchw)

    # -- layout ---------------------------------------------------------------
    def logical(self, v: Value) -> Value:
        """``v`` stored in its logical TF layout."""
        return self.call(torch.permute, v, NCHW_TO_NHWC) if v.nchw else v

    def channels_first(self, v: Value) -> Value:
        """A logical NHWC ``v`` stored as NCHW (a view: no copy)."""
        if v.nchw:
            return v
        if v.rank != 4:
            raise ConversionError(f"expected a 4-d NHWC tensor, got shape {list(v.shape)}")
        return self.call(torch.permute, v, NHWC_TO_NCHW, nchw=True)

    def broadcast_nchw(self, v: Value) -> Value:
        """``v`` (rank <= 4) in the physical layout of an NCHW-stored NHWC tensor it is
        broadcast against: left-padded to rank 4, then permuted."""
        if v.nchw:
            return v
        if v.rank > 4:
            raise ConversionError(f"cannot broadcast a rank-{v.rank} tensor against NHWC")
        return self.call(_broadcast_nchw, v, nchw=True)

    def physical_axis(self, v: Value, axis: int) -> int:
        """Where logical ``axis`` of ``v`` lies in its storage."""
        axis = axis % v.rank
        return NHWC_TO_NCHW.index(axis) if v.nchw else axis

    def const_list(self, v: Value, what: str) -> list[int]:
        """A constant integer tensor as a list (shapes, axes, perms, paddings)."""
        if not v.is_const:
            raise ConversionError(f"{what} must be a constant, not computed at run time")
        return [int(x) for x in v.example.reshape(-1).tolist()]


def _broadcast_nchw(t: torch.Tensor) -> torch.Tensor:
    return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape)).permute(NHWC_TO_NCHW)


def _map_values(obj: Any, fn: Callable[[Value], Any]) -> Any:
    if isinstance(obj, Value):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_values(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_values(o, fn) for k, o in obj.items()}
    return obj


def _values_in(obj: Any) -> list[Value]:
    found: list[Value] = []
    _map_values(obj, found.append)
    return found


def _load_converters() -> None:
    """Import the converter modules (each registers its ops on import)."""
    from models.tfjs import ops_conv, ops_math, ops_shape  # noqa: F401


def _example_input(node: Node, source: str) -> torch.Tensor:
    shape = node.get("shape")
    if not shape:
        raise UnsupportedModelError(f"{source}: input {node.name!r} has no static shape")
    if any(d < 0 for d in shape[1:]):
        raise UnsupportedModelError(f"{source}: input {node.name!r} has unknown size {shape}; only the batch may vary")
    torch.manual_seed(0)
    return torch.rand(EXAMPLE_BATCH, *shape[1:])


def build_graph_module(model: GraphModel) -> fx.GraphModule:
    """Convert ``model`` to a GraphModule: ``forward(*inputs) -> dict[output name, tensor]``,
    inputs and outputs in the JSON's own (TF) layout and signature order."""
    _load_converters()
    source = model.source
    by_name = {n.name: n for n in model.nodes}
    for node in model.nodes:
        if node.op not in _CONVERTERS and node.op not in ("Const", "Placeholder"):
            raise UnsupportedModelError(
                f"{source}: op {node.op!r} (node {node.name!r}) is not supported by the TF.js converter; "
                f"supported ops: {', '.join(supported_ops())}")
    builder = GraphBuilder()
    values: dict[str, Value | list[Value]] = {}

    def value_of(name: str, reader: Node) -> Value:
        base, _, index = name.partition(":")
        if base not in by_name:
            raise ModelFileError(f"{source}: node {reader.name!r} reads {name!r}, which is not in the graph")
        found = values[base]
        if isinstance(found, list):
            return found[int(index or 0)]
        if index not in ("", "0"):
            raise ModelFileError(f"{source}: node {reader.name!r} reads output {index} of single-output {base!r}")
        return found

    for node in _topological(model.nodes, by_name, source):
        try:
            if node.op == "Const":
                if node.name not in model.weights:
                    raise ModelFileError(f"{source}: constant {node.name!r} is not in the weights manifest")
                values[node.name] = builder.const(model.weights[node.name])
            elif node.op == "Placeholder":
                values[node.name] = builder.placeholder(node.name, _example_input(node, source))
            else:
                inputs = [value_of(i, node) for i in node.inputs]
                values[node.name] = _CONVERTERS[node.op](builder, node, inputs)
        except ModelError:
            raise
        except ConversionError as exc:
            raise UnsupportedModelError(f"{source}: op {node.op!r} (node {node.name!r}): {exc}") from exc
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise ModelFileError(
                f"{source}: op {node.op!r} (node {node.name!r}) cannot run on its inputs (a weight of the "
                f"wrong shape or a damaged graph?): {str(exc).splitlines()[0]}") from exc
    outputs = {}
    for name in model.outputs:
        value = value_of(name, Node("<outputs>", "", ()))
        logical = builder.logical(value)
        if logical.is_const:
            raise UnsupportedModelError(f"{source}: output {name!r} is a constant")
        outputs[name] = logical.node
    if not model.inputs:
        raise UnsupportedModelError(f"{source}: the graph has no input (Placeholder)")
    builder.graph.output(outputs)
    module = fx.GraphModule(builder.root, builder.graph, class_name="TfjsGraphModule")
    from models.tfjs.optimize import fold_into_convs

    fold_into_convs(module)
    module.eval()
    return module


def _topological(nodes: Sequence[Node], by_name: dict[str, Node], source: str) -> list[Node]:
    """Nodes ordered so each comes after its inputs (TF.js JSON need not be ordered)."""
    order: list[Node] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for start in nodes:
        if state.get(start.name):
            continue
        stack: list[tuple[Node, int]] = [(start, 0)]
        state[start.name] = 1
        while stack:
            node, k = stack.pop()
            if k < len(node.inputs):
                stack.append((node, k + 1))
                dep = by_name.get(node.inputs[k].split(":")[0])
                if dep is None:
                    raise ModelFileError(f"{source}: node {node.name!r} reads {node.inputs[k]!r}, "
                                         "which is not in the graph")
                if state.get(dep.name) == 1:
                    raise ModelFileError(f"{source}: the graph has a cycle through {dep.name!r}")
                if not state.get(dep.name):
                    state[dep.name] = 1
                    stack.append((dep, 0))
            else:
                state[node.name] = 2
                order.append(node)
    return order
