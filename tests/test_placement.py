"""Placement on a cluster: actor pool sizing, GPU precision settings, CPU path unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.base import TaskOptions
from models.registry import get_spec
from pipeline.decode import decode_batch
from pipeline.inference import ComputeOptions, InferenceStage, ModelPlan, autocast_dtype, stage_arguments
from pipeline.job import Placement, plan_placement
from pipeline.settings import IndexSettings


@pytest.mark.parametrize(("cluster", "gpu", "settings", "expected"), [
    ({"CPU": 16, "GPU": 4}, True, {}, Placement(4, 1.0, 0.0)),
    ({"CPU": 16, "GPU": 4}, True, {"gpus_per_actor": 0.5}, Placement(8, 0.5, 0.0)),
    ({"CPU": 4, "GPU": 1}, True, {"gpus_per_actor": 0.1}, Placement(10, 0.1, 0.0)),
    ({"CPU": 4, "GPU": 1}, True, {"gpus_per_actor": 0.4}, Placement(2, 0.4, 0.0)),
    ({"CPU": 16, "GPU": 2}, True, {"num_actors": 6}, Placement(6, 1.0, 0.0)),  # asks the autoscaler
    ({"CPU": 8}, False, {}, Placement(4, 0.0, 1.0)),  # half the CPUs, the other half decodes
    ({"CPU": 8}, False, {"actor_cpus": 2.0}, Placement(2, 0.0, 2.0)),
    ({"CPU": 2}, False, {}, Placement(1, 0.0, 1.0)),
    ({"CPU": 1}, False, {}, Placement(1, 0.0, 1.0)),
    ({"CPU": 8, "GPU": 1}, False, {}, Placement(4, 0.0, 1.0)),  # GPUs unused when CPU models were chosen
])
def test_actor_pool_is_sized_to_the_cluster(cluster, gpu, settings, expected):
    assert plan_placement(IndexSettings(**settings), cluster, gpu) == expected


@pytest.mark.parametrize(("gpus", "model_threads", "expected"), [
    (0, None, 2),  # a CPU actor: the default it is given
    (0, 3, 3),
    (1, None, None),  # a GPU actor: Ray's one thread
    (1, 3, 3),  # --model-threads applies on GPU too (it was ignored there)
])
def test_model_threads_reach_cpu_and_gpu_actors(gpus, model_threads, expected):
    arguments = stage_arguments(IndexSettings(model_threads=model_threads), [], gpus, default_threads=2)
    assert arguments["cpu_threads"] == expected


def test_light_models_share_a_gpu_four_ways_unless_told():
    light = [ModelPlan(task, get_spec(name))
             for task, name in (("classify", "efficientnet_lite0"), ("detect", "nanodet"), ("segment", "selfie"))]
    heavy = [*light[:2], ModelPlan("segment", get_spec("deeplabv3_resnet50"))]
    cluster = {"CPU": 16, "GPU": 2}
    assert plan_placement(IndexSettings(), cluster, True, light) == Placement(8, 0.25, 0.0)
    assert plan_placement(IndexSettings(), cluster, True, heavy) == Placement(2, 1.0, 0.0)
    assert plan_placement(IndexSettings(gpus_per_actor=1.0), cluster, True, light) == Placement(2, 1.0, 0.0)
    assert plan_placement(IndexSettings(), {"CPU": 16}, False, light) == Placement(8, 0.0, 1.0)
    assert plan_placement(IndexSettings(), {"CPU": 4, "GPU": 1}, True, light) == Placement(2, 0.5, 0.0)  # g6.xlarge
    assert plan_placement(IndexSettings(), {"CPU": 1, "GPU": 1}, True, light) == Placement(1, 1.0, 0.0)
    assert plan_placement(IndexSettings(num_actors=8), cluster, True, light) == Placement(8, 0.25, 0.0)  # 2 GPUs' worth


def test_precision_choices():
    assert autocast_dtype("auto", bf16_supported=True) is torch.bfloat16
    assert autocast_dtype("auto", bf16_supported=False) is torch.float16  # a T4
    assert autocast_dtype("bf16", bf16_supported=True) is torch.bfloat16
    assert autocast_dtype("fp16", bf16_supported=True) is torch.float16
    assert autocast_dtype("fp32", bf16_supported=True) is None


def _decoded(photos) -> dict[str, np.ndarray]:
    paths = [str(p) for p in photos]
    n = len(paths)
    stats = [p.stat() for p in photos]
    return decode_batch({"path": np.array(paths, dtype=object),
                         "size": np.array([st.st_size for st in stats], np.int64),
                         "mtime_ns": np.array([st.st_mtime_ns for st in stats], np.int64),
                         "tasks": np.array(["classify"] * n, dtype=object),
                         "previous_path": np.array([""] * n, dtype=object)}, image_size=256, max_pixels=10**9)


def _stage(device_options: ComputeOptions) -> InferenceStage:
    plans = [ModelPlan("classify", get_spec("efficientnet_lite0"))]
    return InferenceStage(plans, None, TaskOptions(top_k=5), cpu_threads=1, compute=device_options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_gpu_precision_leaves_the_cpu_path_fp32_and_channels_last_keeps_the_labels(eval_photos):
    batch = _decoded(eval_photos[::250])
    plain = _stage(ComputeOptions("fp32", channels_last=False))
    assert _stage(ComputeOptions("fp16", channels_last=False))(batch).equals(plain(batch))  # bit for bit
    tuned = _stage(ComputeOptions("fp16", channels_last=True))
    assert tuned.autocast is None
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for w in tuned.wrappers for p in w.model.parameters())
    labels = lambda table: table["labels"].to_pylist()  # noqa: E731
    assert all(labels(plain(batch)))
    for got, want in zip(labels(tuned(batch)), labels(plain(batch))):  # same labels, float noise apart
        assert [x["label"] for x in got] == [x["label"] for x in want]
        assert all(abs(g["score"] - w["score"]) < 1e-4 for g, w in zip(got, want))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_on_gpu_keeps_the_labels(eval_photos, monkeypatch):
    """bf16 may swap a near tie: on an H200 it called the husky photo (fp32: Bernese
    mountain dog 0.084, Shetland sheepdog 0.073) a sheepdog; every clear top-1 stays."""
    batch = _decoded(eval_photos[::50])
    gpu = _stage(ComputeOptions("auto", channels_last=True))
    assert gpu.autocast in (torch.bfloat16, torch.float16)
    monkeypatch.setattr("pipeline.inference.pick_device", lambda: "cpu")
    cpu = _stage(ComputeOptions())
    for got, want in zip(gpu(batch)["labels"].to_pylist(), cpu(batch)["labels"].to_pylist()):
        tied = {w["label"] for w in want if w["score"] >= want[0]["score"] - 0.02}
        assert got[0]["label"] in tied, (got[:2], want[:2])
