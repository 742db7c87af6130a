"""Model formats Strongroom accepts, and refusal of everything else *before* deserialisation.

Accepted: ONNX, skops (with a per-model trusted-type list), XGBoost UBJ/JSON, LightGBM text.
Refused: pickle, joblib, PyTorch ``.pt``/``.pth``/``.bin``, NumPy files, compressed blobs and
anything unknown. Detection only looks at bytes (magic numbers, a protobuf wire-format walk, zip
listings, ``json.loads`` with a size cap) and never unpickles, imports or executes anything.

Invariants:

- Acceptance is an allow-list: the file name's extension selects one format, and the content must
  pass that format's positive structural check. The deny-list checks in front only choose a
  clearer refusal message; removing them would refuse the same files.
- Protocol 0/1 pickles have no magic number, so we do not rely on recognising them. Instead, no
  accepted format can be a pickle that runs code: ONNX starts with ``0x08``, UBJSON and JSON with
  ``{`` or whitespace, none of which is a pickle opcode; LightGBM text starts with ``t`` (TUPLE,
  which fails at once on an empty stack) and skops with ``P`` (PERSID, which the default
  unpickler refuses). The server never unpickles anyway; this is defence in depth.
- Compressed blobs (zlib, gzip, bz2, xz, lzma, zstd, lz4) are refused outright: joblib hides
  pickles in them, and accepting none means we never decompress an unknown stream.
"""

from __future__ import annotations

import io
import json
import zipfile
from enum import StrEnum
from types import MappingProxyType

from strongroom.core.registry.archive import check_zip_entry_count
from strongroom.errors import TooLargeError, UnsupportedFormatError


class ModelFormat(StrEnum):
    ONNX = "onnx"
    SKOPS = "skops"
    XGBOOST_UBJ = "xgboost-ubj"
    XGBOOST_JSON = "xgboost-json"
    LIGHTGBM_TEXT = "lightgbm-text"


DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024
"""Largest XGBoost JSON model we parse to recognise it (Python's json uses ~10x the input in
memory); larger models should be saved as UBJ. Callers may pass their configured limit."""

MAX_ZIP_MEMBERS = 100_000
"""Most entries a zip-based model (skops: one ``.npy`` per array) may list; counted before
``zipfile`` builds an object per entry."""

CONVERSION_HINT = (
    "convert the model on your own machine to a safe format: scikit-learn -> ONNX with skl2onnx"
    " (skl2onnx.to_onnx(model, X[:1], options={'zipmap': False})) or -> skops with"
    " skops.io.dump(model, 'model.skops'); XGBoost -> booster.save_model('model.ubj') or"
    " 'model.json'; LightGBM -> booster.save_model('model.txt'); PyTorch ->"
    " torch.onnx.export(model, example_input, 'model.onnx')"
)

ACCEPTED_EXTENSIONS: MappingProxyType[str, ModelFormat] = MappingProxyType(
    {
        "onnx": ModelFormat.ONNX,
        "skops": ModelFormat.SKOPS,
        "ubj": ModelFormat.XGBOOST_UBJ,
        "json": ModelFormat.XGBOOST_JSON,
        "txt": ModelFormat.LIGHTGBM_TEXT,
    }
)

_REFUSED_EXTENSIONS: MappingProxyType[str, str] = MappingProxyType(
    {
        "pkl": "pickle files run arbitrary code when loaded",
        "pickle": "pickle files run arbitrary code when loaded",
        "p": "pickle files run arbitrary code when loaded",
        "dill": "dill files are pickles and run arbitrary code when loaded",
        "cloudpickle": "cloudpickle files run arbitrary code when loaded",
        "sav": "scikit-learn .sav files are pickles and run arbitrary code when loaded",
        "joblib": "joblib files are pickles and run arbitrary code when loaded",
        "pt": "PyTorch checkpoints are pickles and run arbitrary code when loaded",
        "pth": "PyTorch checkpoints are pickles and run arbitrary code when loaded",
        "bin": "PyTorch .bin checkpoints are pickles and run arbitrary code when loaded",
        "ckpt": "checkpoints are pickles and run arbitrary code when loaded",
        "npy": "NumPy files may hold pickled objects",
        "npz": "NumPy archives may hold pickled objects",
        "gz": "compressed model files are not accepted",
        "bz2": "compressed model files are not accepted",
        "xz": "compressed model files are not accepted",
        "lzma": "compressed model files are not accepted",
        "z": "compressed model files are not accepted",
        "zst": "compressed model files are not accepted",
        "lz4": "compressed model files are not accepted",
    }
)

_PICKLE_MEMBER_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".pt", ".pth", ".bin", ".sav")

# Magic numbers of compression formats (joblib's compressors among them).
_COMPRESSION_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
)

_LEGACY_PICKLE_START = frozenset(b"(}])cNIFSVLKJMGXUTq")
"""First opcodes of typical protocol 0/1 pickles; used only to word the refusal message."""

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_UBJ_LENGTH_MARKERS = MappingProxyType(
    {ord("i"): 1, ord("U"): 1, ord("I"): 2, ord("l"): 4, ord("L"): 8}
)
_ONNX_VARINT_FIELDS = frozenset({1, 5})
_ONNX_BYTES_FIELDS = frozenset({2, 3, 4, 6, 7, 8, 14, 20, 25, 26})
_MAX_VARINT_BYTES = 10


def detect_format(
    filename: str,
    data: bytes | memoryview,
    declared: ModelFormat | None = None,
    *,
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
) -> ModelFormat:
    """Return the format of a model file, or raise ``UnsupportedFormatError``.

    The extension picks the candidate format and the content must pass that format's check;
    ``declared``, when given, must equal the result. Nothing is deserialised except, for
    ``.json``, a size-capped ``json.loads``.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    _refuse_dangerous_content(buf)
    ext = _extension(filename)
    if ext in _REFUSED_EXTENSIONS:
        raise UnsupportedFormatError(
            f"refused {_display(filename)}: {_REFUSED_EXTENSIONS[ext]}", hint=CONVERSION_HINT
        )
    fmt = ACCEPTED_EXTENSIONS.get(ext)
    if fmt is None:
        raise UnsupportedFormatError(
            f"unknown model format for {_display(filename)}: expected one of"
            " .onnx, .skops, .ubj, .json (XGBoost) or .txt (LightGBM)",
            hint=CONVERSION_HINT,
        )
    check_format(fmt, buf, max_json_bytes=max_json_bytes)
    if declared is not None and declared is not fmt:
        raise UnsupportedFormatError(
            f"declared format {declared.value!r} does not match the file, which is {fmt.value!r}"
        )
    return fmt


def check_format(
    fmt: ModelFormat, data: bytes, *, max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
) -> None:
    """Raise ``UnsupportedFormatError`` unless ``data`` structurally looks like ``fmt``.

    Runtimes call this before handing bytes to a parser, so that the allow-list also guards
    bytes that did not come through ``detect_format``.
    """
    _refuse_dangerous_content(data)
    if fmt is ModelFormat.ONNX:
        _check_onnx(data)
    elif fmt is ModelFormat.SKOPS:
        _check_skops(data)
    elif fmt is ModelFormat.XGBOOST_UBJ:
        _check_ubj(data)
    elif fmt is ModelFormat.XGBOOST_JSON:
        _check_xgboost_json(data, max_json_bytes)
    else:
        _check_lightgbm(data)


def _extension(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    head, dot, ext = base.rpartition(".")
    return ext if dot and (head or ext) else ""


def _display(filename: str) -> str:
    """A short, quoted form of a user-supplied name for messages."""
    short = filename if len(filename) <= 80 else filename[:77] + "..."  # noqa: PLR2004 - length
    return repr(short)


def _refused(what: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(f"refused: {what}", hint=CONVERSION_HINT)


def _refuse_dangerous_content(data: bytes) -> None:
    """Refuse, by content alone, the formats that can run code or hide a stream we won't open."""
    if not data:
        raise UnsupportedFormatError("the model file is empty")
    if data[0] == 0x80:  # noqa: PLR2004 - pickle PROTO opcode (protocols 2-5)
        raise _refused("the file is a pickle, which runs arbitrary code when loaded")
    if data.startswith(b"\x93NUMPY"):
        raise _refused("the file is a NumPy array file, which may hold pickled objects")
    for magic, name in _COMPRESSION_MAGICS:
        if data.startswith(magic):
            raise _refused(f"the file is {name}-compressed (joblib hides pickles this way)")
    if _is_zlib_header(data):
        raise _refused("the file is zlib-compressed (joblib hides pickles this way)")
    if data.startswith(_ZIP_MAGICS):
        _refuse_pickle_zip(data)
    elif data[0] in _LEGACY_PICKLE_START and data.rstrip(b"\r\n")[-1:] == b".":
        raise _refused("the file looks like a protocol 0/1 pickle")


def _is_zlib_header(data: bytes) -> bool:
    """RFC 1950 header with the 32 KiB window every zlib writer uses (CMF ``0x78``), valid FCHECK.

    Smaller windows (CMF ``0x08``..``0x68``) are legal but rare, and ``0x08`` is also how ONNX
    starts; such streams fail the positive checks anyway.
    """
    if len(data) < 2 or data[0] != 0x78:  # noqa: PLR2004 - header length, CMF of deflate/32K
        return False
    return (data[0] << 8 | data[1]) % 31 == 0


def _zip_names(data: bytes) -> list[str]:
    """Member names from the central directory; nothing is decompressed."""
    check_zip_entry_count(data, MAX_ZIP_MEMBERS)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [info.orig_filename for info in zf.infolist()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise UnsupportedFormatError("the file is a damaged zip archive") from exc


def _refuse_pickle_zip(data: bytes) -> None:
    names = _zip_names(data)
    lowered = [name.lower() for name in names]
    if any(n.endswith(_PICKLE_MEMBER_SUFFIXES) for n in lowered):
        raise _refused("the zip holds pickled members (a PyTorch checkpoint or similar)")
    if lowered and all(n.endswith((".npy", "/")) for n in lowered) and "schema.json" not in lowered:
        raise _refused("the file is a NumPy .npz archive")


# --- positive checks, one per accepted format ---------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            break
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise UnsupportedFormatError("the file is not an ONNX model (bad protobuf varint)")


def _skip_field(data: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return _read_varint(data, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 5:  # noqa: PLR2004 - protobuf wire type fixed32
        return pos + 4
    if wire == 2:  # noqa: PLR2004 - protobuf wire type length-delimited
        length, pos = _read_varint(data, pos)
        return pos + length
    raise UnsupportedFormatError("the file is not an ONNX model (bad protobuf wire type)")


def _check_onnx(data: bytes) -> None:
    """Walk the top level of a protobuf ``ModelProto`` without importing onnx.

    ir_version (field 1, tag ``0x08``) must come first, as every ONNX serialiser writes it, and
    a graph (field 7) must be present; known fields must have their declared wire types and
    every length must stay inside the file.
    """
    if data[0] != 0x08:  # noqa: PLR2004 - tag of field 1, wire type varint
        raise UnsupportedFormatError("the file is not an ONNX model (no ir_version first)")
    pos, seen = 0, set[int]()
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if field == 0 or (field in _ONNX_VARINT_FIELDS and wire != 0):
            raise UnsupportedFormatError("the file is not an ONNX model (bad protobuf field)")
        if field in _ONNX_BYTES_FIELDS and wire != 2:  # noqa: PLR2004 - length-delimited
            raise UnsupportedFormatError("the file is not an ONNX model (bad protobuf field)")
        pos = _skip_field(data, pos, wire)
        seen.add(field)
    if pos != len(data) or 7 not in seen:  # noqa: PLR2004 - field number of graph
        raise UnsupportedFormatError("the file is not an ONNX model (truncated or no graph)")


def _check_skops(data: bytes) -> None:
    if not data.startswith(_ZIP_MAGICS):
        raise UnsupportedFormatError("the file is not a skops file (not a zip archive)")
    names = _zip_names(data)
    if "schema.json" not in names:
        raise UnsupportedFormatError("the file is not a skops file (no schema.json)")


def _check_ubj(data: bytes) -> None:
    """XGBoost UBJ: an object whose first key is ``learner`` (keys are written sorted)."""
    marker = data[1] if len(data) > 1 else -1
    size = _UBJ_LENGTH_MARKERS.get(marker, 0)
    if data[0] != ord("{") or size == 0:
        raise UnsupportedFormatError("the file is not an XGBoost UBJ model")
    length = int.from_bytes(data[2 : 2 + size], "big", signed=marker != ord("U"))
    key = data[2 + size : 2 + size + length]
    if key != b"learner":
        raise UnsupportedFormatError("the file is not an XGBoost UBJ model (no learner)")


def _check_xgboost_json(data: bytes, max_json_bytes: int) -> None:
    if len(data) > max_json_bytes:
        raise TooLargeError(
            f"XGBoost JSON models larger than {max_json_bytes} bytes are not parsed",
            hint="save the model as UBJ instead: booster.save_model('model.ubj')",
        )
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise UnsupportedFormatError("the file is not valid JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("learner"), dict):
        raise UnsupportedFormatError("the JSON file is not an XGBoost model (no learner object)")


def _check_lightgbm(data: bytes) -> None:
    head = data[:4096]
    if not head.startswith(b"tree\n") or b"\nversion=v" not in head:
        raise UnsupportedFormatError("the file is not a LightGBM text model")
