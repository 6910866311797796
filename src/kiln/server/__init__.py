"""kiln's server: KServe v2 / Open Inference Protocol over HTTP and gRPC, with Triton's binary
tensor, model configuration, statistics, repository and schedule extensions, in front of
:class:`kiln.runtime.Runtime`. See ``docs/server.md``.

Entry points: :func:`kiln.server.serve.serve`, :func:`kiln.server.serve.start_server`,
:class:`kiln.server.serve.BackgroundServer`, :class:`kiln.server.config.ServerConfig`. This package
imports nothing heavy by itself; the HTTP server (httptools, uvloop) and grpc load with
:mod:`kiln.server.serve`.
"""
