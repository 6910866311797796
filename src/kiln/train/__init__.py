"""``kiln train``: incremental training from the feedback stream (PyTorch, CPU), gated exports
into the model repository. torch is an optional extra: ``pip install kiln[torch]``.

* :mod:`~kiln.train.ctr_module` — the torch mirror of the ``ctr`` ONNX graph, weights back into ONNX;
* :mod:`~kiln.train.policy` — when to export, the holdout, the gate decision (pure);
* :mod:`~kiln.train.checkpoint` — weights + offset, replaced atomically;
* :mod:`~kiln.train.trainer` — :class:`Trainer` and :class:`TrainConfig`.

See ``docs/online.md``.
"""

from kiln.train.policy import ExportPolicy, GateDecision, decide_gate, is_holdout

__all__ = ["ExportPolicy", "GateDecision", "decide_gate", "is_holdout"]
