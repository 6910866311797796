"""The version a candidate is compared with: a model on a running KServe v2 server, or the newest
version of the model in a model repository (run here with ONNX Runtime).

Both give the served signature and the served outputs for the gate's validation samples.
Connecting to a server that is not there is a ``ConfigError``; a model it does not serve is
``ModelNotFound`` naming the models it does serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kiln.bench.kserve import parse_inputs, split_url
from kiln.bench.peers.ort import create_session, run_session, signature
from kiln.compile.accuracy import run_batches
from kiln.compile.data import SampleSet
from kiln.errors import ConfigError, ModelNotFound, describe
from kiln.repository.layout import MODEL_FILE
from kiln.repository.publish import existing_versions
from kiln.types import Array, Tensors, TensorSpec, datatype_of

BATCH_SIZE = 64


class ServedModel(Protocol):
    """The currently served version of a model."""

    description: str

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """Its (inputs, outputs)."""

    def outputs(self, samples: SampleSet) -> dict[str, Array]:
        """Its outputs for ``samples`` (samples on axis 0)."""


class ServerModel:
    """A model on a KServe v2 server, over HTTP (binary tensors)."""

    def __init__(self, url: str, model: str) -> None:
        from tritonclient import http  # noqa: PLC0415

        self._http = http
        self.model = model
        self.description = f"{model} on {url}"
        self._client = http.InferenceServerClient(split_url(url, "http"), network_timeout=30.0)
        try:
            self._client.is_server_live()
        except Exception as exc:
            raise ConfigError(
                describe(
                    f"no KServe v2 server answers at {url}",
                    seen=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                    fix="start the server, or fix --served-url (HOST:PORT of its HTTP port)",
                )
            ) from None
        self._meta = self._metadata(url)

    def _metadata(self, url: str) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = self._client.get_model_metadata(self.model)
            return meta
        except Exception as exc:
            try:
                index = self._client.get_model_repository_index()
                served = sorted({str(e.get("name")) for e in index})
            except Exception:
                served = []
            raise ModelNotFound(
                describe(
                    f"the server at {url} does not serve model {self.model!r}",
                    seen=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                    fix=f"give --served-model; it serves: {', '.join(served) or 'no models'}",
                )
            ) from None

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        outputs = parse_inputs({"inputs": self._meta.get("outputs", [])})
        return parse_inputs(self._meta), outputs

    def outputs(self, samples: SampleSet) -> dict[str, Array]:
        names = [str(o["name"]) for o in self._meta.get("outputs", [])]
        requested = [self._http.InferRequestedOutput(n, binary_data=True) for n in names]

        def run(batch: Tensors) -> dict[str, Array]:
            tensors = []
            for name, array in batch.items():
                tensor = self._http.InferInput(name, list(array.shape), datatype_of(array.dtype))
                tensor.set_data_from_numpy(np.ascontiguousarray(array), binary_data=True)
                tensors.append(tensor)
            result = self._client.infer(self.model, tensors, outputs=requested)
            return {n: np.asarray(result.as_numpy(n)) for n in names}

        return run_batches(run, samples, BATCH_SIZE)

    def close(self) -> None:
        self._client.close()


class RepositoryModel:
    """The newest version of ``model`` in a model repository, run here with ONNX Runtime."""

    def __init__(self, repo: Path, model: str) -> None:
        versions = existing_versions(Path(repo) / model)
        complete = [v for v in versions if (Path(repo) / model / v / MODEL_FILE).is_file()]
        if not complete:
            raise ModelNotFound(
                describe(
                    f"the repository has no version of model {model!r}",
                    seen=str(Path(repo) / model),
                    fix="publish a first version, or leave out --repo for a first release",
                )
            )
        self.version = complete[-1]
        self.path = Path(repo) / model / self.version / MODEL_FILE
        self.description = f"{model} version {self.version} in {repo}"
        self._session: Any = None

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        return signature(self.path)

    def outputs(self, samples: SampleSet) -> dict[str, Array]:
        if self._session is None:
            self._session = create_session(self.path, optimized=True)
        return run_batches(lambda batch: run_session(self._session, batch), samples, BATCH_SIZE)

    def close(self) -> None:
        self._session = None
