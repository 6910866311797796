"""Peer servers measured beside kiln in the same run, on the same machine, with the same load generator.

* ``kiln`` — kiln's own server (runtime with dynamic batching) on the engine kiln built;
* ``fastapi-ort`` — a plain FastAPI + ONNX Runtime server (:mod:`kiln.bench.peers.fastapi_ort`);
* ``litserve`` — LitServe + ONNX Runtime with its batching on (:mod:`kiln.bench.peers.litserve_ort`);
* ``unoptimized`` — the source model in fp32, graph optimizations off, one request per run, no
  batching; over HTTP, or in-process as :class:`UnoptimizedTarget`.

Each server speaks the KServe v2 JSON routes, so :class:`kiln.bench.KServeTarget` (``binary=False``)
drives all of them. :class:`PeerProcess` starts one on loopback in its own process and stops it.
"""

from kiln.bench.peers.ort import UnoptimizedTarget, create_session
from kiln.bench.peers.process import PEER_KINDS, PeerKind, PeerProcess, PeerSpec, free_port

__all__ = [
    "PEER_KINDS",
    "PeerKind",
    "PeerProcess",
    "PeerSpec",
    "UnoptimizedTarget",
    "create_session",
    "free_port",
]
