"""Running and timing a build on another machine through TVM's RPC tracker and server.

    python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190            # anywhere reachable
    python -m tvm.exec.rpc_server --tracker HOST:9190 --key my-board     # on the machine to use
    convrewrite model.onnx --target k210 --tvm llvm --rpc-tracker HOST:9190 --rpc-key my-board

The compiled library is exported here, uploaded to a server the tracker hands out for the key,
loaded there into a Relax VM, run on the inputs (the outputs come back for the comparison with
onnxruntime) and timed there with TVM's time evaluator. The code is built here for this
machine's target, so the remote machine must be able to run it (same CPU family for llvm).
"""

from __future__ import annotations

import socket
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from . import require_tvm
from .run import flatten_outputs


@dataclass(frozen=True)
class RemoteSpec:
    host: str
    port: int
    key: str
    timeout_s: int = 120

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_tracker(text: str, key: str | None) -> RemoteSpec:
    """``host:port`` and a key, checked, or BadInputError."""
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInputError(f"--rpc-tracker {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    if not key:
        raise BadInputError("--rpc-tracker needs --rpc-key (the key the server registered with)")
    return RemoteSpec(host, int(port), key)


def _tracker(remote: RemoteSpec):
    """A tracker connection; an unreachable address fails at once (TVM's own client retries
    for a minute, warning every 5 s)."""
    require_tvm()
    from tvm import rpc
    try:
        socket.create_connection((remote.host, remote.port), timeout=5).close()
    except OSError as exc:
        raise BadInputError(f"cannot reach the RPC tracker at {remote.address}: "
                            f"{exc.strerror or exc}") from None
    try:
        return rpc.connect_tracker(remote.host, remote.port)
    except Exception as exc:        # noqa: BLE001 - socket and TVM errors alike
        raise BadInputError(f"cannot reach the RPC tracker at {remote.address}: "
                            f"{_first_line(exc)}") from None


def check_tracker(remote: RemoteSpec) -> None:
    """Fail early (before anything is written) when the tracker is unreachable or has no
    server registered under the key."""
    queues = _tracker(remote).summary().get("queue_info", {})
    if remote.key not in queues:
        known = ", ".join(sorted(queues)) or "none"
        raise BadInputError(f"the RPC tracker at {remote.address} has no server with key "
                            f"{remote.key!r} (keys: {known})")


def request_session(remote: RemoteSpec):
    """A session on a server the tracker gives for the key; BadInputError when there is none."""
    tracker = _tracker(remote)
    try:
        return tracker.request(remote.key, priority=1, session_timeout=remote.timeout_s,
                               max_retry=2)
    except Exception as exc:        # noqa: BLE001
        raise BadInputError(f"the RPC tracker at {remote.address} gave no server for key "
                            f"{remote.key!r}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_remote(executable, kind: str, args: list[np.ndarray], remote: RemoteSpec,
               number: int = 5, repeat: int = 3) -> tuple[list[np.ndarray], dict]:
    """Upload, run once (outputs back) and time ``main`` on the remote device."""
    tvm = require_tvm()
    from tvm import relax
    session = request_session(remote)
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / f"convrewrite_{kind}.so"
        executable.export_library(str(library))
        session.upload(str(library))
    module = session.load_module(library.name)
    dev = session.cpu(0) if kind == "llvm" else session.cuda(0)
    vm = relax.VirtualMachine(module, dev)
    inputs = [tvm.runtime.tensor(a, dev) for a in args]
    outputs = [t.numpy() for t in flatten_outputs(vm["main"](*inputs))]
    vm.set_input("main", *inputs)
    timer = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeat)
    results = timer("main").results
    timing = {"remote": remote.address, "key": remote.key, "runs": number * repeat,
              "median_ms": statistics.median(results) * 1e3, "min_ms": min(results) * 1e3}
    return outputs, timing
