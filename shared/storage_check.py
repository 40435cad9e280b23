"""Storage checked from every node before the work starts: can each node read the inputs and see the outputs?

On a cluster whose nodes share no disk, a local ``--out`` or ``output_dir`` is written on whichever node
the writer lands on, and a local video root exists only where it was copied; a user learns it hours
later, or never. This check answers in about a second, before any model loads::

    check = StorageCheck(outputs=["s3://bucket/captions?endpoint_override=..."],
                         inputs=["s3://bucket/videos/v0.mp4"])
    check.on_driver()      # before Ray: each output is writable (a token written and read back), inputs readable
    check.on_cluster()     # Ray connected: one task on every alive node reads every token and input; tokens removed

Both raise :class:`StorageCheckError` with one line naming the location (and the node) and what to use
instead. ``on_cluster`` also works without ``on_driver`` (it calls it). A location is a local path or any
pyarrow filesystem URI (``s3://``, ``gs://``, with pyarrow's query options such as ``endpoint_override``).

What a node must see: for an output, the very token the driver wrote (so a local path that is a different
folder on each node is refused, while a path on NFS that every node mounts passes); for an input file, the
object itself (its first bytes are read, so an object that lists but cannot be read is refused too); for
an input folder (an annotation folder, a video root), at least one entry in it. The
token is a small JSON file ``.storage-check-<random>`` inside the output location, deleted afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from shared.errors import DiscoVLAError
from shared.shards.storage import resolve
from shared.storage_errors import display_uri, storage_error_reason
from shared.uris import join_uri

PROBE_BYTES = 1024  # read from each input: enough to prove access, cheap on any store
REMEDY = (
    "nodes that share no disk must use an object store URI (s3://bucket/prefix, gs://...) or a path on "
    "storage that every node mounts at the same place"
)


class StorageCheckError(DiscoVLAError, OSError):
    """An input that some node cannot read, or an output that some node cannot write or see."""


@dataclass
class StorageCheck:
    """Outputs that every node must be able to see (and the driver to write), inputs every node must read."""

    outputs: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)  # output -> token file location
    _payload: str = field(default="", repr=False)
    seconds: dict[str, float] = field(default_factory=dict)  # what each phase cost

    def __post_init__(self) -> None:
        self.outputs = [str(o) for o in self.outputs if o]
        self.inputs = [str(i) for i in self.inputs if i]

    # ---- on the driver ----------------------------------------------------------------------------

    def on_driver(self) -> StorageCheck:
        """Write a token into every output and read it back; read the first bytes of every input."""
        started = time.perf_counter()
        self._payload = json.dumps(
            {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        )
        try:
            for output in self.outputs:
                self._write_token(output)
            for problem in _probe(self._tokens, self._payload, self.inputs):
                raise StorageCheckError(f"{problem} (on this machine, the driver)")
        except BaseException:
            self.cleanup()
            raise
        self.seconds["driver"] = time.perf_counter() - started
        return self

    def _write_token(self, output: str) -> None:
        try:
            loc = resolve(output)
        except ValueError as err:
            raise StorageCheckError(f"{output}: {err}") from err
        token = loc.join(f".storage-check-{uuid.uuid4().hex[:12]}")
        try:
            if loc.exists() and not loc.is_dir() and loc.fs.type_name == "local":
                raise StorageCheckError(f"{loc}: the output location is a file, not a folder")
            token.write_bytes(self._payload.encode())
        except StorageCheckError:
            raise
        except OSError as err:
            reason = storage_error_reason(output, err, loc.fs)
            raise StorageCheckError(f"{loc}: cannot write to the output location: {reason}") from err
        self._tokens[output] = join_uri(output, token.name)

    # ---- on every node ----------------------------------------------------------------------------

    def on_cluster(self, timeout_s: float = 60.0) -> StorageCheck:
        """One task on every alive Ray node reads every token and input (``ray.init`` must have run)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not self._payload:
            self.on_driver()
        started = time.perf_counter()
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            here = ray.get_runtime_context().get_node_id()
            if [n["NodeID"] for n in nodes] == [here]:  # Ray on this machine only: on_driver said it all
                self.seconds["nodes"] = 1
                return self
            probe = ray.remote(num_cpus=0, max_retries=0)(_probe_node)
            refs = {
                probe.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                ).remote(self._tokens, self._payload, self.inputs): node
                for node in nodes
            }
            ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
            if pending:
                late = ", ".join(_node_name(refs[r]) for r in pending)
                raise StorageCheckError(
                    f"the storage check did not finish within {timeout_s:.0f} s on {late}"
                )
            for ref in ready:
                problems = ray.get(ref)
                if problems:
                    raise StorageCheckError(f"{problems[0]} (on Ray node {_node_name(refs[ref])}); {REMEDY}")
        finally:
            self.cleanup()
        self.seconds["cluster"] = time.perf_counter() - started
        self.seconds["nodes"] = len(nodes)
        return self

    def cleanup(self) -> None:
        """Delete the tokens (best effort: a token left behind is a few bytes, named as such)."""
        for token in self._tokens.values():
            try:
                resolve(token).delete()
            except (OSError, ValueError):
                pass
        self._tokens.clear()


def first_readable(candidates, limit: int = 20) -> list[str]:
    """``[the first of candidates that this process can read]`` (at most ``limit`` tried), or ``[]``:
    the one input every node must then read, chosen among videos some of which may be missing (a missing
    video is the run's business, an error row, not the storage check's)."""
    for given in list(candidates)[:limit]:
        if not _probe({}, "", [str(given)]):
            return [str(given)]
    return []


def _node_name(node: dict) -> str:
    address = node.get("NodeManagerAddress", "?")
    host = node.get("NodeManagerHostname", "")
    return f"{address} (node id {node['NodeID'][:12]}{', host ' + host if host else ''})"


def _probe(tokens: dict[str, str], payload: str, inputs: list[str]) -> list[str]:
    """Problems seen from this process: tokens missing or different, inputs unreadable."""
    problems = []
    for output, token in tokens.items():
        shown = display_uri(output)
        try:
            seen = resolve(token).read_bytes().decode(errors="replace")
        except FileNotFoundError:
            problems.append(
                f"{shown}: cannot see the output location: a file the driver wrote there is missing here"
            )
            continue
        except (OSError, ValueError) as err:
            problems.append(f"{shown}: cannot read the output location: {storage_error_reason(token, err)}")
            continue
        if seen != payload:
            problems.append(
                f"{shown}: the output location here is another folder than the driver's "
                "(the driver's token is not there)"
            )
    for given in inputs:
        shown = display_uri(given)
        try:
            loc = resolve(given)
            kind = loc.fs.get_file_info(loc.path).type
            if kind == pafs.FileType.NotFound:
                problems.append(f"{shown}: cannot read the input: no such file, folder or object")
            elif kind == pafs.FileType.Directory:  # a folder or prefix: something must be in it
                selector = pafs.FileSelector(loc.path, allow_not_found=True, recursive=False)
                if not loc.fs.get_file_info(selector):
                    problems.append(f"{shown}: cannot read the input: the folder is empty here")
            else:
                with loc.fs.open_input_file(loc.path) as f:
                    f.read(PROBE_BYTES)
        except (OSError, ValueError) as err:
            problems.append(f"{shown}: cannot read the input: {storage_error_reason(given, err)}")
    return problems


def _probe_node(tokens: dict[str, str], payload: str, inputs: list[str]) -> list[str]:
    return _probe(tokens, payload, inputs)
