"""A real multi-node Ray cluster on this machine, for tests: one `ray start` per node.

Each node is a `ray start --block` process with its own resources; the head has no CPUs,
so every task and actor runs on a worker node, as on a real cluster. Nothing here uses
`ray stop`, which would stop every Ray on the machine (other test sessions' too): each
node is ended by killing the processes it started, found through /proc.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"  # the ray CLI of the venv running the tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process (from /proc/<pid>/stat)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Node:
    proc: subprocess.Popen
    log: Path
    killed: bool = False

    def processes(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    def runs(self, text: str) -> bool:
        """True if a process of this node has ``text`` in its command line (or title)."""
        return any(text in command_line(pid) for pid in descendants(self.proc.pid))


class LocalCluster:
    """Start with :meth:`start`, add nodes with :meth:`add_node`; always :meth:`shutdown`."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rayc", dir="/tmp"))  # short: socket paths
        self.nodes: list[Node] = []
        # The node's own IP, as Ray detects it, so a driver started here finds the head.
        from ray._private.services import get_node_ip_address

        self.address = f"{get_node_ip_address()}:{_free_port()}"

    def _ray_start(self, *args: str) -> Node:
        log = self.temp_dir / f"node{len(self.nodes)}.log"
        proc = subprocess.Popen(
            [str(RAY), "start", "--block", "--disable-usage-stats",
             f"--dashboard-agent-listen-port={_free_port()}", *args],
            env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        node = Node(proc, log)
        self.nodes.append(node)
        return node

    def start(self, head_cpus: int = 0) -> None:
        port = self.address.rsplit(":", 1)[1]
        self._ray_start("--head", f"--port={port}", f"--num-cpus={head_cpus}",
                        "--include-dashboard=false", f"--temp-dir={self.temp_dir}")
        self.wait_for_nodes(1)

    def add_node(self, num_cpus: int) -> Node:
        node = self._ray_start(f"--address={self.address}", f"--num-cpus={num_cpus}")
        self.wait_for_nodes(sum(not n.killed for n in self.nodes))
        return node

    def wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        """Until ``count`` raylets are up (each node's log says so), or fail with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n for n in self.nodes if not n.killed]
            for node in live:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"ray start exited:\n{node.log.read_text()[-3000:]}")
            if sum("Ray runtime started" in n.log.read_text() for n in live) >= count:
                return
            time.sleep(0.5)
        raise TimeoutError("Ray nodes did not start:\n" + "\n".join(n.log.read_text()[-2000:] for n in self.nodes))

    def kill_node(self, node: Node) -> None:
        """Lose ``node`` as a crashed machine would: SIGKILL its raylet, then all it ran."""
        pids = node.processes()
        raylets = [p for p in pids if "/raylet/raylet" in command_line(p)]
        for pid in raylets + pids:
            _kill(pid)
        node.killed = True

    def shutdown(self) -> None:
        """SIGKILL every process the live nodes started, then remove the temp dir."""
        pids = [pid for node in self.nodes if not node.killed for pid in node.processes()]
        for pid in pids:
            _kill(pid)
        for node in self.nodes:
            node.proc.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
