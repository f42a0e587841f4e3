"""Review findings, each pinned by a test that failed before its fix."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from jobs.cli import cli
from jobs.index_cmd import _ProgressBar
from models.registry import get_spec
from pipeline.errors import ModelError
from pipeline.indexer import index_library
from pipeline.plan import KnownPhoto, plan_run
from pipeline.records import ScannedFile
from pipeline.settings import IndexSettings
from tests.conftest import copy_photos, write_image


def _settings(root: Path, index: Path, **kwargs) -> IndexSettings:
    return IndexSettings(roots=(str(root),), index_dir=index, tasks=("classify",), **kwargs)


def test_a_run_on_ray_leaves_the_process_wide_data_context_as_it_was(tmp_path, ray_local):
    import ray.data

    context = ray.data.DataContext.get_current()
    before = (context.max_errored_blocks, context.enable_progress_bars, context.print_on_execution_start)
    write_image(tmp_path / "photos" / "a.jpg", fmt="JPEG")
    summary = index_library(_settings(tmp_path / "photos", tmp_path / "index", ray_min_photos=0))
    assert summary.indexed == 1
    after = ray.data.DataContext.get_current()
    assert (after.max_errored_blocks, after.enable_progress_bars, after.print_on_execution_start) == before


def test_the_plan_counts_a_moved_photo_that_needs_a_model_rerun():
    known = {"/p/old.jpg": KnownPhoto(5, 5, "print", '{"classify": "m@w1.pth"}')}
    plan = plan_run([ScannedFile("/p/new.jpg", 5, 6)], known, {}, {"classify": "m@w2.pth"}, ["/p"],
                    fingerprint_of=lambda path: "print")
    assert [(w.file.path, w.previous_path) for w in plan.todo] == [("/p/new.jpg", "/p/old.jpg")]
    assert (plan.moved, plan.moved_rerun, plan.new, plan.deleted) == (1, 1, 0, [])
    shown: list[str] = []
    bar = _ProgressBar(enabled=False)
    import click

    original = click.echo
    click.echo = lambda message, **_: shown.append(message)  # type: ignore[assignment]
    try:
        bar.planned(plan, {"classify": "m"})
    finally:
        click.echo = original
        bar.close()
    assert "1 to re-run with new models, 1 moved" in shown[0]


def test_the_summary_counts_a_moved_photo_that_needs_a_model_rerun(tmp_path, eval_photos):
    library = tmp_path / "photos"
    a, _ = copy_photos(eval_photos[:2], library)
    index = tmp_path / "index"
    assert index_library(_settings(library, index)).indexed == 2
    os.rename(a, library / "renamed.JPEG")
    lite0 = get_spec("efficientnet_lite0")
    again = dataclasses.replace(lite0, name="efficientnet_lite0_again")  # a new model key: a re-run
    summary = index_library(_settings(library, index), specs={"classify": again})
    assert (summary.indexed, summary.moved, summary.new, summary.changed) == (2, 1, 0, 2)
    assert summary.deleted == 0


@pytest.fixture
def wrong_checkpoint(tmp_path) -> tuple[dict, Path]:
    """EfficientNet-Lite0's spec with a checkpoint of the wrong shape in --weights-dir."""
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save({"_conv_stem.weight": torch.zeros(3, 3, 3, 3)}, weights / "lite0-custom.pth")
    spec = dataclasses.replace(get_spec("efficientnet_lite0"), file_name="lite0-custom.pth",
                               sha256_prefix=None, packaged_path=None)
    return {"classify": spec}, weights


def test_a_mismatched_efficientnet_checkpoint_is_a_model_error_in_process(tmp_path, wrong_checkpoint):
    specs, weights = wrong_checkpoint
    write_image(tmp_path / "photos" / "a.jpg", fmt="JPEG")
    with pytest.raises(ModelError, match="do not fit the architecture: the checkpoint has 1 tensors"):
        index_library(_settings(tmp_path / "photos", tmp_path / "index", weights_dir=weights), specs=specs)


@pytest.mark.slow
def test_a_mismatched_efficientnet_checkpoint_is_a_model_error_on_ray(tmp_path, wrong_checkpoint, ray_local):
    specs, weights = wrong_checkpoint
    write_image(tmp_path / "photos" / "a.jpg", fmt="JPEG")
    with pytest.raises(ModelError, match="do not fit the architecture: the checkpoint has 1 tensors") as raised:
        index_library(_settings(tmp_path / "photos", tmp_path / "index", weights_dir=weights, ray_min_photos=0),
                      specs=specs)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("command", [["search", "dog"], ["status"], ["errors"], ["index", "."]])
def test_an_index_path_the_os_refuses_is_a_usage_error(tmp_path, command):
    too_long = str(tmp_path / ("a" * 300))  # over the 255-byte limit of one file name
    result = CliRunner().invoke(cli, [*command, "--index", too_long])
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert "File name too long" in result.output and "Traceback" not in result.output
