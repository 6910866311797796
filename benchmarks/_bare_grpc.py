"""The gRPC ceiling of ``benchmarks/server.py``: a ``grpc.aio`` server (the stack kiln's gRPC front
end uses) that parses each ``ModelInfer`` request and answers a prepared response, running no model
and no kiln code. What any Python gRPC server built on grpcio can reach on the machine at the time.

    python benchmarks/_bare_grpc.py --port 8001
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import numpy as np
from grpc import aio

from kiln.server.grpc._generated import kserve_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


def _responses(name: str) -> dict[str, Any]:
    metadata = pb.ModelMetadataResponse(name=name, versions=["1"], platform="onnxruntime_onnx")
    metadata.inputs.add(name="dense", datatype="FP32", shape=[-1, 13])
    metadata.inputs.add(name="sparse", datatype="INT64", shape=[-1, 26])
    metadata.outputs.add(name="prob", datatype="FP32", shape=[-1, 1])
    config = pb.ModelConfigResponse()
    config.config.name = name
    config.config.max_batch_size = 16
    stats = pb.ModelStatisticsResponse()
    stats.model_stats.add(name=name, version="1")
    infer = pb.ModelInferResponse(model_name=name, model_version="1")
    infer.outputs.add(name="prob", datatype="FP32", shape=[1, 1])
    infer.raw_output_contents.append(np.zeros(1, np.float32).tobytes())
    return {
        "ServerLive": pb.ServerLiveResponse(live=True),
        "ServerReady": pb.ServerReadyResponse(ready=True),
        "ModelReady": pb.ModelReadyResponse(ready=True),
        "ServerMetadata": pb.ServerMetadataResponse(name="bare", version="1"),
        "ModelMetadata": metadata,
        "ModelConfig": config,
        "ModelStatistics": stats,
        "ModelInfer": infer,
    }


def _handler(rpc: str, reply: Any) -> grpc.RpcMethodHandler:
    async def answer(request: bytes, context: Any) -> bytes:
        if rpc == "ModelInfer":
            message = pb.ModelInferRequest.FromString(request)
            for raw in message.raw_input_contents:
                np.frombuffer(raw, np.uint8)
        return data

    data = reply.SerializeToString()
    return grpc.unary_unary_rpc_method_handler(answer)


async def _serve(port: int, name: str) -> None:
    server = aio.server()
    handlers = {rpc: _handler(rpc, reply) for rpc, reply in _responses(name).items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--name", default="ctr")
    args = parser.parse_args()
    import uvloop

    uvloop.run(_serve(args.port, args.name))


if __name__ == "__main__":
    main()
