"""Joining a Ray cluster that cannot be joined: one clear message with the fix, exit 2, fast.

Real failures where this machine can make them (nothing listening at the address; a
real `ray start --head` cluster that requires an authentication token), and Ray's own
exception text for a version mismatch (``ray._private.utils.check_version_info``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

import pytest

from pipeline.errors import ClusterError
from pipeline.ray_connect import cluster_error
from tests.conftest import ROOT, write_image
from tests.local_cluster import LocalCluster, _free_port
from tests.test_small_runs import foreign_lines, photos


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_an_unreachable_address_says_so_within_seconds(tmp_path):
    write_image(tmp_path / "photos" / "a.jpg", fmt="JPEG")
    started = time.monotonic()
    result = photos("index", str(tmp_path / "photos"), "--index", str(tmp_path / "index"),
                    "--address", f"127.0.0.1:{_free_port()}")
    line = _one_error_line(result)
    assert time.monotonic() - started < 15
    assert "cannot reach a Ray cluster at 127.0.0.1:" in line and "Connection refused" in line
    assert "ray start --head" in line and "leave out --address" in line


def _token_home(folder: Path, token: str | None) -> Path:
    (folder / ".ray").mkdir(parents=True)
    if token:
        (folder / ".ray" / "auth_token").write_text(token)
    return folder


@pytest.mark.slow
def test_a_token_cluster_needs_its_token_and_the_token_file_is_picked_up(tmp_path):
    token = secrets.token_hex(16)
    head_home = _token_home(tmp_path / "head-home", token)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(head_home), "RAY_AUTH_MODE": "token",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    write_image(tmp_path / "photos" / "a.jpg", fmt="JPEG")
    cluster = LocalCluster(env)
    try:
        cluster.start(head_cpus=2)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        args = ("index", str(tmp_path / "photos"), "--index", str(tmp_path / "index"),
                "--address", cluster.address, "--models", "classify", "--quiet")
        started = time.monotonic()
        result = photos(*args, env={**clean, "HOME": str(_token_home(tmp_path / "no-token", None))})
        line = _one_error_line(result)
        assert time.monotonic() - started < 15
        assert "requires an authentication token" in line and "~/.ray/auth_token" in line
        # With the head's token file in place, as `ray start --address` would find it.
        home = _token_home(tmp_path / "with-token", token)
        result = photos(*args, env={**clean, "HOME": str(home)}, timeout=240)
        assert result.returncode == 0, result.stderr
        assert "indexed    1  (1 new" in result.stdout
        assert foreign_lines(result.stderr) == [], result.stderr
    finally:
        cluster.shutdown()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)


def test_a_version_mismatch_names_both_versions_and_the_fix():
    # The exact text Ray raises (ray/_private/utils.py check_version_info), wrapped as
    # ray.init wraps it.
    mismatch = RuntimeError(
        "Version mismatch: The cluster was started with:\n    Ray: 2.49.1\n    Python: 3.12.4\n"
        "This process on node 10.0.0.5 was started with:\n    Ray: 2.60.0\n    Python: 3.11.7\n"
    )
    try:
        try:
            raise mismatch
        except RuntimeError as exc:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from exc
    except ConnectionError as wrapped:
        error = cluster_error(wrapped, "10.0.0.1:6379")
    assert isinstance(error, ClusterError)
    message = str(error)
    assert "\n" not in message
    assert "Ray 2.49.1 on Python 3.12.4" in message and "Ray 2.60.0 on Python 3.11.7" in message
    assert "ray==2.49.1" in message


def test_the_version_mismatch_text_is_what_this_ray_raises():
    """Guards the mapping above against a Ray upgrade that rewords the message."""
    from ray._private.utils import check_version_info

    with pytest.raises(RuntimeError) as raised:
        check_version_info({"ray_version": "0.0.1", "python_version": "3.0.0"}, "node 10.0.0.5")
    error = cluster_error(raised.value, "head:6379")
    assert "runs Ray 0.0.1 on Python 3.0.0" in str(error) and "ray==0.0.1" in str(error)
