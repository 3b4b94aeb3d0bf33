"""Names in the registry's namespace: `catalog.schema.object`, aliases, artifact paths.

Validation lives here so every front end refuses the same malformed names with
the same message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from services.common.errors import InvalidArgument

# Patterns are applied with fullmatch: `$` would let a trailing newline through.
_PART = re.compile(r"[a-z][a-z0-9_]{0,62}")
# Model names may also use upper case and `-` (MLflow users name models freely).
_MODEL_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,255}")
_RESERVED_ALIAS = re.compile(r"latest|v\d+", re.IGNORECASE)


def check_part(value: str, what: str) -> str:
    if not _PART.fullmatch(value or ""):
        raise InvalidArgument(
            f"invalid {what} name {value!r}: use lowercase letters, digits and '_', starting with a letter (max 63)",
            field=what,
        )
    return value


@dataclass(frozen=True)
class SchemaName:
    catalog: str
    schema: str

    @property
    def full(self) -> str:
        return f"{self.catalog}.{self.schema}"

    @staticmethod
    def parse(full_name: str) -> SchemaName:
        parts = (full_name or "").split(".")
        if len(parts) != 2:
            raise InvalidArgument(f"invalid schema name {full_name!r}: expected 'catalog.schema'", field="full_name")
        return SchemaName(check_part(parts[0], "catalog"), check_part(parts[1], "schema"))


@dataclass(frozen=True)
class ModelName:
    catalog: str
    schema: str
    name: str

    @property
    def full(self) -> str:
        return f"{self.catalog}.{self.schema}.{self.name}"

    @property
    def schema_name(self) -> SchemaName:
        return SchemaName(self.catalog, self.schema)

    @staticmethod
    def parse(full_name: str) -> ModelName:
        parts = (full_name or "").split(".")
        if len(parts) != 3:
            raise InvalidArgument(
                f"invalid model name {full_name!r}: expected 'catalog.schema.model'", field="model_name"
            )
        return ModelName(check_part(parts[0], "catalog"), check_part(parts[1], "schema"), check_model_part(parts[2]))


def check_model_part(value: str) -> str:
    if not _MODEL_PART.fullmatch(value or ""):
        raise InvalidArgument(
            f"invalid model name {value!r}: use letters, digits, '_' and '-' (max 128)", field="model_name"
        )
    return value


def check_alias(alias: str) -> str:
    if not _ALIAS.fullmatch(alias or "") or _RESERVED_ALIAS.fullmatch(alias):
        raise InvalidArgument(
            f"invalid alias {alias!r}: letters, digits, '_' and '-', not 'latest' nor 'v<number>'", field="alias"
        )
    return alias


def check_version(version: int) -> int:
    if version <= 0:
        raise InvalidArgument(f"invalid version {version}: versions start at 1", field="version")
    return version


def clean_relative_path(path: str, *, allow_empty: bool = True) -> str:
    """A `/`-separated path inside an artifact root; refuses anything that could escape it."""
    path = (path or "").replace("\\", "/").strip("/")
    if not path:
        if allow_empty:
            return ""
        raise InvalidArgument("artifact path is empty", field="path")
    parts = PurePosixPath(path).parts
    if any(part in ("..", ".", "") for part in parts) or "\x00" in path:
        raise InvalidArgument(f"invalid artifact path {path!r}: no '..', '.' or empty parts", field="path")
    return "/".join(parts)
