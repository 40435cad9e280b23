"""A real multi-node Ray cluster on 127.0.0.1 for tests: one head plus worker nodes, each its own raylet.

::

    from tests.ray_cluster import LocalRayCluster

    with LocalRayCluster(head_cpus=0) as cluster:            # head: GCS + a raylet with no CPUs
        a = cluster.add_node(num_cpus=2, resources={"engine": 1})
        b = cluster.add_node(num_cpus=2, resources={"engine": 1})
        subprocess.run([sys.executable, "-m", "pipelines.caption", "--ray-address", cluster.address, ...],
                       env=cluster.env())                    # a driver in another process
        cluster.kill_node(a)                                 # SIGKILL that node's raylet (and its workers)
        with cluster.connect():                              # or a driver in this process (ray.init)
            ray.get(...)
    # stopped: every process of this cluster, and only those, is gone

Each ``ray start`` runs through a small wrapper (:data:`_RAY_CLI`) that keeps ``127.0.0.1`` as the node
address (Ray would otherwise swap in the machine's routable address), with its own ports and its own
short ``--temp-dir``, and under a time limit. Drivers get an environment (:meth:`LocalRayCluster.env`)
that keeps them on loopback too and turns Ray's token authentication off for this cluster.

Teardown never calls ``ray stop`` (it stops every Ray instance of the user, other tests' included): it
ends the processes whose command line names this cluster's temp dir, and their descendants (worker
processes rename themselves, so they are found as the raylets' children), SIGTERM first, SIGKILL after
a grace period. A cluster that fails to start is torn down before the error is raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
# A lost node is declared dead after ~3 s of missed health checks (Ray's default is ~30 s).
HEALTH_CHECK = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}

# `ray start` with Ray's localhost -> routable-address substitution switched off.
_RAY_CLI = (
    "import sys\n"
    "import ray._private.services as services\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv = ['ray', *sys.argv[1:]]\n"
    "sys.exit(main())\n"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the (comm) that may hold spaces


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _with_descendants(roots: set[int]) -> set[int]:
    parents = {pid: _parent(pid) for pid in _pids()}
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found |= frontier
    return found


def _in_private_mounts(dirs: tuple[str, ...], command: list[str]) -> list[str]:
    """``command`` in a new mount namespace where each of ``dirs`` is an empty tmpfs of its own."""
    for d in dirs:
        Path(d).mkdir(parents=True, exist_ok=True)
    mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(d)}" for d in dirs)
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'{mounts} && exec "$@"',
        "sh",
        *command,
    ]


def private_disks_supported() -> str | None:
    """None where nodes can get private disks here (root with ``unshare``), else the reason why not."""
    if os.geteuid() != 0:
        return "private node disks need root (unshare --mount)"
    if shutil.which("unshare") is None:
        return "private node disks need unshare (util-linux)"
    with tempfile.TemporaryDirectory(prefix="ns-") as folder:
        probe = subprocess.run(_in_private_mounts((folder,), ["true"]), capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --mount failed: {probe.stderr.strip()[:200]}"


def registered_checkpoint_step(snapshot: str | bytes) -> int | None:
    """The step of the latest checkpoint in a Ray Train checkpoint-manager snapshot
    (``<storage_path>/<run>/checkpoint_manager_snapshot.json``), or None (none yet, or being rewritten)."""
    try:
        latest = json.loads(snapshot).get("latest_checkpoint_result")
    except ValueError:
        return None
    return latest["metrics"]["step"] if latest else None


@contextlib.contextmanager
def private_disk_cluster(node_local: str | Path, *, num_cpus: int = 2, nodes: int = 2):
    """A head without CPUs plus ``nodes`` worker nodes, each with a private disk (:meth:`add_node`'s
    ``private_disk``) over the Ray temp folder and ``node_local``: a cluster of machines that share no disk."""
    with LocalRayCluster(head_cpus=0) as cluster:
        for _ in range(nodes):
            cluster.add_node(num_cpus=num_cpus, private_disk=[node_local])
        yield cluster


@dataclass
class RayNode:
    """One ``ray start`` node of a :class:`LocalRayCluster`."""

    name: str  # "head", "node1", "node2", ...
    num_cpus: int
    resources: dict = field(default_factory=dict)
    private_dirs: tuple[str, ...] = ()  # folders this node sees as its own empty tmpfs (no shared disk)
    node_manager_port: int = 0  # identifies this node's raylet among the cluster's processes
    killed: bool = False

    def raylet_pids(self, temp_dir: str) -> list[int]:
        return [
            pid
            for pid in _pids()
            if "raylet" in (cmd := _cmdline(pid))
            and temp_dir in cmd
            and f"--node_manager_port={self.node_manager_port}" in cmd
        ]


class LocalRayCluster:
    """A head node plus :meth:`add_node` worker nodes on 127.0.0.1; see the module docstring.

    ``head_cpus=0`` (the default) keeps tasks and actors off the head, so that killing a worker node
    loses real work while the drivers (which attach to the head) survive.
    """

    def __init__(
        self,
        *,
        head_cpus: int = 0,
        head_resources: dict | None = None,
        object_store_bytes: int = 200 * 1024**2,
        start_timeout_s: float = 90.0,
    ):
        self.temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's socket paths are limited
        self.port = free_port()
        self.object_store_bytes = object_store_bytes
        self.start_timeout_s = start_timeout_s
        self.head = RayNode("head", head_cpus, dict(head_resources or {}))
        self.nodes: list[RayNode] = []
        self.log = Path(self.temp_dir) / "ray-start.log"
        self._started = False

    @property
    def address(self) -> str:
        """The GCS address drivers pass to ``ray.init(address=...)`` / ``--ray-address``."""
        return f"{LOOPBACK}:{self.port}"

    def env(self, base: dict | None = None) -> dict:
        """An environment for a driver process of this cluster (loopback only, no token auth)."""
        env = dict(os.environ if base is None else base)
        env.update(
            RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0"
        )
        env.pop("RAY_ADDRESS", None)
        return env

    # ---- life cycle -------------------------------------------------------------------------------

    def start(self) -> LocalRayCluster:
        try:
            self._ray_start(
                self.head,
                [
                    "--head",
                    f"--port={self.port}",
                    "--include-dashboard=false",
                    f"--ray-client-server-port={free_port()}",
                    f"--dashboard-port={free_port()}",
                ],
            )
            self._started = True
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(
        self,
        num_cpus: int,
        resources: dict | None = None,
        *,
        wait: bool = True,
        private_disk: bool | list[str | Path] = False,
    ) -> RayNode:
        """Start one more node (its own raylet) that joins the head; waits until the GCS sees it.

        ``private_disk=True`` runs the node in its own mount namespace with an empty tmpfs over the
        cluster's Ray temp folder, so that what the node writes there is invisible to every other process,
        as on another machine; a list of folders also covers those (a local output folder, say: the node
        sees its own empty one). Needs root (``unshare --mount``); the mounts die with the node."""
        private: tuple[str, ...] = ()
        if private_disk:
            extra_dirs = [] if private_disk is True else [str(Path(d)) for d in private_disk]
            private = (self.temp_dir, *extra_dirs)
        node = RayNode(f"node{len(self.nodes) + 1}", num_cpus, dict(resources or {}), private)
        self.nodes.append(node)
        self._ray_start(node, [f"--address={self.address}"])
        if wait:
            self.wait_for_nodes(1 + sum(not n.killed for n in self.nodes))
        return node

    def _ray_start(self, node: RayNode, extra: list[str]) -> None:
        ports = _free_ports(7)
        while any(ports[6] <= p <= ports[6] + 200 for p in ports[:6]):  # Ray refuses overlapping ports
            ports[6] = free_port()
        node.node_manager_port = ports[0]
        command = [
            sys.executable,
            "-c",
            _RAY_CLI,
            "start",
            *extra,
            f"--node-ip-address={LOOPBACK}",
            f"--num-cpus={node.num_cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps(node.resources)}",
            f"--temp-dir={self.temp_dir}",
            f"--object-store-memory={self.object_store_bytes}",
            "--disable-usage-stats",
            f"--node-manager-port={ports[0]}",
            f"--object-manager-port={ports[1]}",
            f"--metrics-export-port={ports[2]}",
            f"--dashboard-agent-listen-port={ports[3]}",
            f"--dashboard-agent-grpc-port={ports[4]}",
            f"--runtime-env-agent-port={ports[5]}",
            f"--min-worker-port={ports[6]}",
            f"--max-worker-port={ports[6] + 200}",
        ]
        if node.private_dirs:
            command = _in_private_mounts(node.private_dirs, command)
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **HEALTH_CHECK}
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # set for `ray start`, it refuses multi-node
        env.pop("RAY_ADDRESS", None)
        with self.log.open("a") as log:
            log.write(f"\n$ ray start ({node.name}) {' '.join(command[3:])}\n")
            log.flush()
            try:
                proc = subprocess.run(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=self.start_timeout_s
                )
            except subprocess.TimeoutExpired as err:
                raise RuntimeError(
                    f"ray start ({node.name}) took over {self.start_timeout_s:.0f} s; log: {self.tail()}"
                ) from err
        if proc.returncode != 0:
            raise RuntimeError(f"ray start ({node.name}) failed with status {proc.returncode}: {self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait_for_nodes(self, count: int, timeout_s: float | None = None) -> None:
        """Until the GCS reports exactly ``count`` alive nodes (raises after ``timeout_s``).

        Asks from a short-lived driver subprocess, so the calling process stays free of Ray state."""
        timeout_s = timeout_s or self.start_timeout_s
        code = (
            "import sys, time, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR')\n"
            f"deadline = time.monotonic() + {timeout_s}\n"
            "while True:\n"
            "    alive = sum(n['Alive'] for n in ray.nodes())\n"
            f"    if alive == {count} or time.monotonic() > deadline:\n"
            "        print('ALIVE_NODES', alive)\n"
            f"        sys.exit(alive != {count})\n"
            "    time.sleep(0.25)\n"
        )
        try:
            out = subprocess.run(
                [sys.executable, "-c", code],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout_s + 60,
            )
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"the GCS at {self.address} did not answer; log: {self.tail()}") from err
        if out.returncode != 0:
            seen = [line for line in out.stdout.splitlines() if line.startswith("ALIVE_NODES ")]
            raise RuntimeError(
                f"expected {count} alive Ray nodes, the GCS reports "
                f"{seen[-1].split()[1] if seen else 'nothing'}: {out.stderr[-1500:]}; "
                f"log: {self.tail()}"
            )

    def kill_node(self, node: RayNode, sig: int = signal.SIGKILL) -> list[int]:
        """Kill ``node``'s raylet (as a lost machine would lose it); its worker processes exit with it.
        Returns the raylet pids signalled."""
        if node is self.head:
            raise ValueError("kill a worker node, not the head: drivers are attached to the head")
        pids = node.raylet_pids(self.temp_dir)
        if not pids:
            raise RuntimeError(f"no raylet found for {node.name} (port {node.node_manager_port})")
        for pid in _with_descendants(set(pids)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        node.killed = True
        return pids

    def node_running(self, process_title: str) -> RayNode | None:
        """The first live worker node one of whose raylet's descendants has ``process_title`` in its command
        line (e.g. ``"RayTrainWorker"``: Ray worker processes rename themselves after what they run)."""
        for node in self.nodes:
            raylets = set(node.raylet_pids(self.temp_dir))
            if any(process_title in _cmdline(pid) for pid in _with_descendants(raylets) - raylets):
                return node
        return None

    def processes(self) -> set[int]:
        """Every live process of this cluster: those naming its temp dir, and their descendants."""
        own = {pid for pid in _pids() if pid != os.getpid() and self.temp_dir in _cmdline(pid)}
        return {pid for pid in _with_descendants(own) if pid != os.getpid() and _alive(pid)}

    def stop(self, grace_s: float = 2.0) -> None:
        """End this cluster's processes (only them), then remove its temp dir."""
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            pids = self.processes()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                pids = {pid for pid in pids if _alive(pid)}
                time.sleep(0.1)
            if not pids:
                break
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self._started = False

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- a driver in this process -----------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, **init_kwargs):
        """``ray.init`` to this cluster from the test process (loopback, no auth); shuts down on exit."""
        import ray
        from ray._private import ray_constants

        saved = {key: os.environ.get(key) for key in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
        cluster_flag = ray_constants.ENABLE_RAY_CLUSTER
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ.pop("RAY_ADDRESS", None)
        ray_constants.ENABLE_RAY_CLUSTER = False  # what RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 sets at import
        try:
            ray.init(address=self.address, logging_level="WARNING", **init_kwargs)
            yield ray
        finally:
            ray.shutdown()
            ray_constants.ENABLE_RAY_CLUSTER = cluster_flag
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            # Ray caches the auth mode read at init: re-read it, or a later local ray.init() in this
            # process would start a token-auth GCS (RAY_AUTH_MODE=token) and talk to it without a token
            from ray._raylet import Config

            Config.initialize("")
