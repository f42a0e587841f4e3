"""Start or join Ray quietly, and turn a failed join into one message that says the fix.

Two things Ray leaves to its caller, done here:

- **Output.** Ray's C++ core worker in this process logs errors straight to file
  descriptor 2 (e.g. "Actor ... has constructor arguments in the object store", which
  Ray Data triggers on every actor pool), and Ray's Python loggers keep the stream they
  found at import. :class:`RayOutput` points descriptor 2 at a log file while Ray runs and
  gives ``sys.stderr`` a new stream on the terminal, so only this program's own lines
  (progress, warnings, errors) reach the user; Ray's lines stay in that file and in Ray's
  own logs under its temp folder.
- **Joining a cluster** (``--address``) fails in a few well-known ways, each raised by Ray
  as a long traceback or a minute-long hang: nothing listening at the address, a cluster
  that requires an authentication token (``ray start --head`` turns token auth on since
  Ray 2.5x), a cluster started with another Ray or Python version. :func:`join` checks the
  address first (a TCP connect, seconds), picks up a token the way ``ray start
  --address`` does (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``),
  and maps Ray's errors to :class:`~pipeline.errors.ClusterError` (exit 2).
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import sys
import tempfile
import time
from typing import Any

from pipeline.errors import ClusterError

PROBE_TIMEOUT_S = 5.0
"""How long a TCP connect to ``--address`` may take before it counts as unreachable."""
GCS_RETRIES_ENV, GCS_RETRIES = "RAY_gcs_server_port_wait_time_s", 5
"""Ray's connect attempts (one a second) to a cluster's GCS; Ray's default is 20."""


class RayOutput:
    """Descriptor 2 to a log file while Ray runs in this process; ``sys.stderr`` stays ours."""

    def __init__(self) -> None:
        folder = os.path.join(tempfile.gettempdir(), "ray")
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"photos-driver-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
        self._saved_fd: int | None = None
        self._saved_stderr: Any = None

    def start(self) -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        log_fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._saved_fd = os.dup(2)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        if _writes_to_fd2(sys.stderr):  # under a test runner's capture, leave its stream alone
            self._saved_stderr = sys.stderr
            sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(self._saved_fd), "wb", buffering=0),
                                          encoding=sys.stderr.encoding, errors="backslashreplace",
                                          line_buffering=True, write_through=True)

    def stop(self) -> None:
        if self._saved_fd is None:
            return
        if self._saved_stderr is not None:
            ours, sys.stderr = sys.stderr, self._saved_stderr
            ours.close()
            self._saved_stderr = None
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._saved_fd = None


def _writes_to_fd2(stream: Any) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def start_local(num_cpus: int | None) -> None:
    """Start a local Ray for this process, as quietly and quickly as Ray allows."""
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False, configure_logging=True)


def join(address: str) -> None:
    """Join the Ray cluster at ``address``; :class:`ClusterError` with the fix if it fails."""
    import ray

    probe(address)
    use_cluster_token()
    # The address answered the probe, so Ray's 20 one-second retries (for a head still
    # starting) only delay the message when it refuses us (a token, versions): a few do.
    saved = os.environ.get(GCS_RETRIES_ENV)
    os.environ.setdefault(GCS_RETRIES_ENV, str(GCS_RETRIES))
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=True)
    except Exception as exc:
        raise cluster_error(exc, address) from exc
    finally:
        if saved is None:
            os.environ.pop(GCS_RETRIES_ENV, None)


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at ``host:port`` (Ray itself retries for a minute)."""
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d+)", address)
    if not match:  # "auto", "local", ray:// client URLs: Ray resolves them, quickly
        return
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(
            f"cannot reach a Ray cluster at {address} ({why}). Check the address (`ray status` on the "
            "head node prints it) and that the head node is running (`ray start --head`) and reachable "
            "from here; leave out --address to run on this machine."
        ) from exc


def use_cluster_token() -> None:
    """Use the cluster's auth token if this machine has one, as `ray start --address` does.

    Ray's ``ray.init(address=host:port)`` does not look for a token unless
    ``RAY_AUTH_MODE=token`` is set; its CLI does. An explicit ``RAY_AUTH_MODE`` wins.
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def cluster_error(exc: BaseException, address: str) -> ClusterError:
    """One line that says what went wrong joining ``address`` and how to fix it."""
    text = "\n".join(f"{type(e).__name__}: {e}" for e in _chain(exc))
    version = re.search(r"The cluster was started with:\s*Ray: (\S+)\s*Python: (\S+)\s*"
                        r"This process.*?was started with:\s*Ray: (\S+)\s*Python: (\S+)", text, re.DOTALL)
    if version:
        ray_c, py_c, ray_me, py_me = version.groups()
        return ClusterError(
            f"the Ray cluster at {address} runs Ray {ray_c} on Python {py_c}, this machine Ray {ray_me} on "
            f"Python {py_me}; they must match. Install ray=={ray_c} in this environment (and Python {py_c}), "
            "or restart the cluster with this machine's versions."
        )
    if "AuthenticationError" in text or re.search(r"auth(entication)? token|RAY_AUTH_MODE|Unauthenticated",
                                                   text, re.IGNORECASE):
        return ClusterError(
            f"the Ray cluster at {address} requires an authentication token, and this machine has none or "
            "another one. Copy the head node's ~/.ray/auth_token to this machine's ~/.ray/auth_token "
            "(or set RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN), then run again."
        )
    if "Could not find any running Ray instance" in text:
        return ClusterError(
            f"--address {address}: no running Ray cluster found on this machine. Start one with "
            "`ray start --head`, give its address (host:port), or leave out --address to run locally."
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ClusterError(
        f"cannot join the Ray cluster at {address}: {first}. Check the address and that this machine runs "
        "the cluster's Ray and Python versions; leave out --address to run on this machine."
    )
