"""Open Inference Protocol v2 bodies as pydantic models, for the OpenAPI document only.

The ``/v2`` routes never parse or serialise through these: ``oip`` decodes requests with the
model's own signature (names, datatypes, shapes, batch limits), which no static schema can
express, and encodes responses with numpy. These models say what the protocol's JSON looks like
and must be kept in step with ``oip`` and ``routes/inference``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerLive(_Doc):
    live: bool


class ServerReady(_Doc):
    ready: bool


class ServerMetadata(_Doc):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(_Doc):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size (the batch).")


class ModelMetadata(_Doc):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(_Doc):
    name: str
    version: str
    ready: bool


Datatype = Literal["FP32", "FP64", "INT64", "INT32", "BOOL", "BYTES"]


class InferInput(_Doc):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any] | None = Field(
        None,
        description="Elements in row-major order, flat or nested; finite numbers only. "
        "Absent when parameters.binary_data_size gives the tensor's bytes instead.",
    )
    parameters: dict[str, Scalar] | None = None


class InferRequestedOutput(_Doc):
    name: str
    parameters: dict[str, Scalar] | None = Field(
        None, description='{"binary_data": true} asks for this output in binary form.'
    )


class InferRequest(_Doc):
    """The JSON part of an ``/infer`` body. With Triton's binary tensor extension, the header
    ``Inference-Header-Content-Length`` gives its length and raw little-endian tensor bytes
    follow it."""

    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Scalar] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[InferRequestedOutput] | None = None


class InferOutput(_Doc):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Scalar] | None = None


class InferResponse(_Doc):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutput]
