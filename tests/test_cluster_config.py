"""cluster.yaml is a config Ray's cluster launcher accepts: checked with Ray's own code.

``prepare_config`` merges the provider's defaults as ``ray up`` does, and
``validate_config`` checks the result against Ray's JSON schema (``ray-schema.json``)
and its cross-field rules. No cloud call is made.
"""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import ROOT


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_validation(config):
    validate_config(prepare_config(config))


def test_validation_is_not_vacuous(config):
    wrong = copy.deepcopy(config)
    wrong["available_node_types"]["gpu"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(wrong))
    wrong = copy.deepcopy(config)
    wrong["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        validate_config(prepare_config(wrong))


def test_cluster_has_gpu_and_cpu_workers_the_project_and_its_weights(config):
    types = config["available_node_types"]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert any(t["resources"].get("GPU", 0) >= 1 and t.get("max_workers", 0) > t.get("min_workers", 0)
               for t in workers.values()), "an autoscaling GPU worker type"
    assert any(t["resources"].get("GPU", 0) == 0 and t["resources"]["CPU"] > 0 for t in workers.values())
    mounts = config["file_mounts"]
    assert mounts["/home/ubuntu/photos"] == "." and mounts["/home/ubuntu/photos-weights"] == "./weights"
    assert any("-e /home/ubuntu/photos" in c for c in config["setup_commands"])
    for command in (config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]):
        assert "PHOTOS_WEIGHTS_DIR=/home/ubuntu/photos-weights" in command
