"""Read a TF.js graph model from disk: the graph's nodes and its weights as tensors.

A TF.js graph model is ``X.json`` (``modelTopology``: a TensorFlow GraphDef as JSON, with
attribute values in protobuf's JSON form, strings base64-encoded; ``weightsManifest``:
the name, shape, dtype and quantisation of every constant, in the order their bytes lie
in the shards) and one or more binary shards (``X.bin``). Every check that can fail on a
damaged or foreign file happens here, so a truncated shard or a manifest that does not
add up is one :class:`ModelFileError` naming the file, never a deep traceback.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import ModelFileError, UnsupportedModelError

_PLAIN_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANTISED_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


@dataclass(frozen=True)
class Node:
    """One GraphDef node: its op, its data inputs ("name" or "name:k") and attributes."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key`` decoded to a Python value (see :func:`attr_value`)."""
        return attr_value(self.attr[key]) if key in self.attr else default


@dataclass
class GraphModel:
    """A parsed TF.js graph model: nodes, weights, inputs and outputs."""

    source: str
    """The JSON file's path, for messages."""
    nodes: list[Node]
    weights: dict[str, torch.Tensor]
    inputs: list[str]
    outputs: list[str]
    """Output tensor names ("node" or "node:k"), from the signature where there is one."""


def attr_value(value: dict[str, Any]) -> Any:
    """A GraphDef ``AttrValue`` in protobuf JSON as Python: bytes strings decoded to str,
    int64 strings to int, lists to lists."""
    if "list" in value:
        items = value["list"]
        for key in ("i", "f", "s", "b", "type"):
            if key in items:
                return [attr_value({key: v}) for v in items[key]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode("utf-8", "replace")
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        shape = value["shape"]
        return None if shape.get("unknownRank") else [int(d.get("size", -1)) for d in shape.get("dim", [])]
    return value


def read_graph_model(json_path: Path, bin_paths: list[Path] | None = None) -> GraphModel:
    """Parse ``json_path`` and its weight shards (by default the manifest's ``paths``,
    relative to the JSON's folder). Raises :class:`ModelFileError` naming the bad file."""
    source = str(json_path)
    try:
        spec = json.loads(Path(json_path).read_text())
        topology = spec["modelTopology"]
        raw_nodes = topology["node"]
        manifest = spec["weightsManifest"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{source} is not a readable TF.js graph model: {exc}") from exc
    if spec.get("format", "graph-model") != "graph-model":
        raise UnsupportedModelError(f"{source} is a TF.js {spec.get('format')!r}, not a graph model")
    try:
        nodes = [Node(n["name"], n["op"], tuple(i for i in n.get("input", []) if not i.startswith("^")),
                      n.get("attr", {})) for n in raw_nodes]
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{source}: a graph node lacks its name or op ({exc})") from exc
    if bin_paths is None:
        bin_paths = [Path(json_path).parent / p for group in manifest for p in group.get("paths", [])]
    weights = _read_weights(manifest, bin_paths, source)
    inputs = [n.name for n in nodes if n.op == "Placeholder"]
    signature = spec.get("signature") or topology.get("signature") or {}
    outputs = [_tensor_name(v.get("name", k)) for k, v in signature.get("outputs", {}).items()]
    if not outputs:  # no signature: every non-constant node nothing else reads
        consumed = {i.split(":")[0] for n in nodes for i in n.inputs}
        outputs = [n.name for n in nodes if n.name not in consumed and n.op not in ("Const", "Placeholder")]
    return GraphModel(source, nodes, weights, inputs, outputs)


def _tensor_name(name: str) -> str:
    """'Identity:0' -> 'Identity' (output 0 is the node itself); 'Split:1' stays."""
    return name.removesuffix(":0")


def _read_weights(manifest: list[dict[str, Any]], bin_paths: list[Path], source: str) -> dict[str, torch.Tensor]:
    """Every manifest entry as a float32 / int32 / bool tensor, dequantised."""
    chunks = []
    for path in bin_paths:
        try:
            chunks.append(Path(path).read_bytes())
        except OSError as exc:
            raise ModelFileError(f"cannot read the weights of {source}: {exc}") from exc
    data = b"".join(chunks)
    where = ", ".join(str(p) for p in bin_paths)
    weights: dict[str, torch.Tensor] = {}
    offset = 0
    try:
        entries = [w for group in manifest for w in group["weights"]]
        for entry in entries:
            name, shape, dtype = entry["name"], [int(d) for d in entry["shape"]], entry["dtype"]
            count = math.prod(shape)
            quantisation = entry.get("quantization")
            stored = quantisation["dtype"] if quantisation else dtype
            numpy_type = _QUANTISED_DTYPES.get(stored) or _PLAIN_DTYPES.get(stored)
            if numpy_type is None or (quantisation is None and dtype not in _PLAIN_DTYPES):
                raise UnsupportedModelError(f"{source}: weight {name!r} has unsupported dtype {stored!r}")
            size = count * np.dtype(numpy_type).itemsize
            if offset + size > len(data):
                raise ModelFileError(
                    f"weights file {where} is truncated: {len(data)} bytes, but {source}'s manifest needs "
                    f"at least {offset + size} (at weight {name!r}); replace both files")
            array: np.ndarray = np.frombuffer(data, dtype=numpy_type, count=count, offset=offset).reshape(shape)
            offset += size
            weights[name] = _dequantise(array, dtype, quantisation)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source} has a malformed weights manifest: {exc}") from exc
    if offset != len(data):
        raise ModelFileError(
            f"weights file {where} has {len(data)} bytes but {source}'s manifest describes {offset}: "
            "the files do not belong together or one was altered; replace both")
    return weights


def _dequantise(array: np.ndarray, dtype: str, quantisation: dict[str, Any] | None) -> torch.Tensor:
    if quantisation is None:
        return torch.from_numpy(array.copy())
    if quantisation["dtype"] == "float16":
        return torch.from_numpy(array.astype(np.float32))
    # Affine uint8/uint16 quantisation: value = q * scale + min.
    values = array.astype(np.float32) * float(quantisation["scale"]) + float(quantisation["min"])
    if dtype == "int32":
        return torch.from_numpy(np.round(values).astype(np.int32))
    return torch.from_numpy(values)
