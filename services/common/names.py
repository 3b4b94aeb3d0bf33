"""Names of registry securables as a client spells them, checked before any call is made on them."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

# As the registry names catalogs and schemas (lower-case identifiers) and the objects in them.
_PART = re.compile(r"[a-z][a-z0-9_]{0,62}")
_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")


def object_name(full_name: str, what: str) -> tuple[str, str, str]:
    """`catalog.schema.name` split in three; INVALID_ARGUMENT (on field `what`) otherwise."""
    parts = (full_name or "").split(".")
    if (
        len(parts) != 3
        or not _PART.fullmatch(parts[0])
        or not _PART.fullmatch(parts[1])
        or not _NAME_PART.fullmatch(parts[2])
    ):
        raise InvalidArgument(f"invalid {what} name {full_name[:80]!r}: expected 'catalog.schema.name'", field=what)
    return parts[0], parts[1], parts[2]
