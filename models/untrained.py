"""Registered architectures with random weights, for checks that need no trained model.

Speed, memory and the mechanics of the whole path (boxes to SQLite, masks to Parquet)
do not depend on what the weights learned, and torchvision's COCO/VOC weights cannot be
downloaded everywhere. :func:`save_untrained` writes a real weight file for an
architecture and returns a spec that loads it through the ordinary weight lookup, so
nothing downstream knows the weights are random. Results from such a spec mean nothing:
say so wherever they are shown.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from models.registry import ModelSpec, get_spec


def save_untrained(name: str, folder: Path, seed: int = 0) -> ModelSpec:
    """Write random weights for model ``name`` into ``folder``; return the spec that uses them.

    The spec has ``weights_name`` "untrained (random, seed N)" and no hash or download
    address; pass ``folder`` as the run's weights folder.
    """
    spec = get_spec(name)
    torch.manual_seed(seed)
    model = spec.build()
    folder.mkdir(parents=True, exist_ok=True)
    file_name = f"{name}-untrained-seed{seed}.pth"
    torch.save(model.state_dict(), folder / file_name)
    return dataclasses.replace(spec, weights_name=f"untrained (random, seed {seed})", file_name=file_name,
                               url=None, sha256_prefix=None, adapt_state_dict=None, packaged_path=None)
