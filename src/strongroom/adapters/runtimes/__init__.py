"""Model runtimes: one ``ModelRuntime`` adapter per accepted format family.

``onnx`` (ONNX via onnxruntime, a core dependency), ``skops``, ``xgboost`` and ``lightgbm``
(optional extras, imported on first use). Each validates bytes without executing them and loads
only a ``VerifiedArtifact``; see ``strongroom.core.registry.runtime``.
"""
