"""TensorFlow.js graph models as native PyTorch modules, with no TF.js at run time.

>>> from models.tfjs import load_graph_model
>>> model = load_graph_model("nanodet.json", "nanodet.bin")     # doctest: +SKIP
>>> outputs = model(batch)                                       # doctest: +SKIP
>>> outputs["Identity"].shape                                    # doctest: +SKIP
torch.Size([4, 2704, 80])

``reader`` parses the JSON and the weight shards; ``builder`` walks the graph once and
emits a ``torch.fx.GraphModule``; ``ops_conv``, ``ops_math`` and ``ops_shape`` hold one
small converter per TF op type. Inputs and outputs keep the TF.js model's own layout
(e.g. NHWC images) and batch of any size; inside, convolutions run NCHW.
"""

from __future__ import annotations

from pathlib import Path

from torch import fx

from models.tfjs.builder import add_converter, build_graph_module, supported_ops
from models.tfjs.reader import GraphModel, read_graph_model

__all__ = ["GraphModel", "add_converter", "load_graph_model", "read_graph_model", "supported_ops"]


def load_graph_model(json_path: str | Path, bin_path: str | Path | list[Path] | None = None) -> fx.GraphModule:
    """The TF.js graph model ``json_path`` (weights from ``bin_path``, by default the
    manifest's shards beside the JSON) as a module: ``forward(*inputs)`` returns a dict
    of output name -> tensor.

    Raises :class:`pipeline.errors.ModelFileError` for a damaged or inconsistent file and
    :class:`pipeline.errors.UnsupportedModelError` for an op the converter lacks, both
    naming the file, at load time.
    """
    if bin_path is None:
        shards = None
    elif isinstance(bin_path, list):
        shards = [Path(p) for p in bin_path]
    else:
        shards = [Path(bin_path)]
    model = read_graph_model(Path(json_path), shards)
    module = build_graph_module(model)
    module.input_names = list(model.inputs)  # type: ignore[assignment]
    module.output_names = list(model.outputs)  # type: ignore[assignment]
    return module
