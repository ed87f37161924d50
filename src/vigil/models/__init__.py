"""Model lifecycle: a registry folder of versioned models, offline training, and live serving.

* :mod:`vigil.models.registry`: :class:`ModelRegistry`, versions ``v1, v2, ...`` of each named model, a
  ``PROMOTED`` pointer and a ``history.jsonl`` audit trail of promotions and rollbacks.
* :mod:`vigil.models.training`: :func:`train_isolation_forest` fits on a file, validates on a held-back
  slice and registers the result.
* :mod:`vigil.models.serving`: :class:`RegistryModelDetector` (kind ``registry_model``), a detector that
  serves the promoted version, picks up promotions between micro-batches, and falls back to per-metric
  statistics when the model can't be served.

Layering: this package sits beside ``detectors/`` (it may import ``types``, ``errors``, ``state``,
``stats`` and ``detectors``) and never imports the engine, I/O or the CLI.
Submodules are imported on use, so ``import vigil.models`` stays cheap.
"""

from vigil.models.registry import CorruptModelError, ModelNotFoundError, ModelRegistry, RegistryError

__all__ = ["CorruptModelError", "ModelNotFoundError", "ModelRegistry", "RegistryError"]
