"""What a publisher hands the registry, and the checks made on it before anything is stored.

An upload becomes a mapping of relative paths to bytes (one file, or an archive unpacked in
memory). Exactly one file is the model; the others may only be UTF-8 text documents that travel
with it (card, configuration, licence) and are never parsed or executed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from strongroom.core.registry import archive
from strongroom.core.registry.formats import ModelFormat
from strongroom.core.registry.manifest import ModelCard
from strongroom.errors import InvalidInputError, TooLargeError, UnsupportedFormatError

AUXILIARY_SUFFIXES = frozenset({".md", ".txt", ".json", ".yaml", ".yml", ".csv"})
"""Files that may travel with a model (cards, configs, licences). Never executed or parsed."""


@dataclass(frozen=True, slots=True)
class RegistryLimits:
    max_upload_bytes: int
    max_archive_members: int
    segment_size: int


@dataclass(frozen=True, slots=True)
class PublishRequest:
    model: str
    files: Mapping[str, bytes]
    """Relative posix path -> bytes. One file, or an unpacked archive/directory."""
    card: ModelCard
    actor: str
    single_file: bool = False
    """The upload was one file (its signature names it ``"."``, as model_signing does)."""
    primary: str | None = None
    declared_format: ModelFormat | None = None
    signature_bundle: str | None = None
    input_schema_json: bytes | None = None
    """A user-supplied input schema (JSON); inferred from the model and sample when absent."""
    reference_csv: bytes | None = None
    trusted_types: tuple[str, ...] = ()


def files_from_upload(
    filename: str, data: bytes, limits: RegistryLimits
) -> tuple[dict[str, bytes], bool]:
    """Turn one uploaded file into the version's files; archives are unpacked in memory."""
    if len(data) > limits.max_upload_bytes:
        raise TooLargeError(f"upload exceeds {limits.max_upload_bytes} bytes")
    if archive.is_archive(filename):
        files = archive.unpack_archive(
            filename,
            data,
            max_total_bytes=limits.max_upload_bytes,
            max_members=limits.max_archive_members,
        )
        return files, False
    name = PurePosixPath(filename.replace("\\", "/")).name
    return {name: data}, True


def check_total_size(files: Mapping[str, bytes], limits: RegistryLimits) -> None:
    if not files:
        raise InvalidInputError("the upload holds no files")
    total = sum(len(data) for data in files.values())
    if total > limits.max_upload_bytes:
        raise TooLargeError(f"model files exceed {limits.max_upload_bytes} bytes")


def choose_primary(files: Mapping[str, bytes], primary: str | None) -> str:
    if primary is not None:
        if primary not in files:
            raise InvalidInputError(f"primary file {primary!r} is not in the upload")
        return primary
    if len(files) == 1:
        return next(iter(files))
    candidates = [p for p in files if PurePosixPath(p).suffix.lower() not in AUXILIARY_SUFFIXES]
    if len(candidates) != 1:
        raise InvalidInputError(
            "cannot tell which file is the model",
            hint="name it with --primary (the others must be documentation or configuration)",
        )
    return candidates[0]


def check_auxiliary(files: Mapping[str, bytes], primary: str) -> None:
    for path, data in files.items():
        if path == primary:
            continue
        if PurePosixPath(path).suffix.lower() not in AUXILIARY_SUFFIXES:
            raise UnsupportedFormatError(
                f"{path}: only one model file per version; other files must be "
                f"{', '.join(sorted(AUXILIARY_SUFFIXES))}"
            )
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsupportedFormatError(f"{path}: auxiliary files must be UTF-8 text") from None
