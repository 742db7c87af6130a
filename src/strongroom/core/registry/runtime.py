"""The model-runtime port: turns a ``VerifiedArtifact`` into something that predicts.

Adapters: ``adapters.runtimes.{onnx,skops,xgboost,lightgbm}``. A runtime also *validates* a
candidate at publish time (parses it without executing code, lists its inputs) so that a model
that would not load is refused before it is stored.

Arrays are numpy arrays; they are typed ``Any`` here because core stays free of numpy outside
``core.detectors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from strongroom.core.registry.artifact import VerifiedArtifact
from strongroom.core.registry.formats import ModelFormat


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One named input or output: Open Inference Protocol datatype and shape (-1 = dynamic)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class LoadedModel(Protocol):
    @property
    def signature(self) -> ModelSignature: ...

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the model on a batch: input name -> array; returns output name -> array."""
        ...


class ModelRuntime(Protocol):
    @property
    def formats(self) -> frozenset[ModelFormat]: ...

    def validate(
        self, fmt: ModelFormat, data: bytes, trusted_types: tuple[str, ...]
    ) -> ModelSignature:
        """Parse ``data`` without executing it; raise ``InvalidInputError`` subclasses if it
        is malformed, uses external data, or (skops) references untrusted types."""
        ...

    def load(self, artifact: VerifiedArtifact) -> LoadedModel: ...
