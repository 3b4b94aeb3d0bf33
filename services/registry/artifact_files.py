"""Artifacts on the local filesystem under the artifact root, streamed in chunks (the default store;
artifact_store.py has the S3 one and picks between them).

Locations are kept as `mlflow-artifacts:/<relative path>` URIs (what MLflow's
client resolves against the tracking server); every path is checked to stay
inside the root. Reads and writes run in a worker thread, chunk by chunk, so a
model folder of any size moves without being held in memory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from services.common.errors import InvalidArgument, NotFound
from services.registry.entities import FileInfo
from services.registry.names import clean_relative_path

SCHEME = "mlflow-artifacts:"


class ArtifactFiles:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- locations ----------------------------------------------------------------

    @staticmethod
    def uri(relative: str) -> str:
        return f"{SCHEME}/{relative.strip('/')}"

    def inside(self, uri: str) -> str | None:
        """The root-relative path of an `mlflow-artifacts:` or `file:` URI (or a path) inside the root, else None."""
        if uri.startswith(SCHEME):
            return clean_relative_path(uri[len(SCHEME) :])
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        resolved = Path(path).resolve()
        if resolved == self.root or self.root in resolved.parents:
            return resolved.relative_to(self.root).as_posix()
        return None

    def relative(self, uri: str) -> str:
        """The root-relative path of an `mlflow-artifacts:` or `file:` URI inside the root."""
        found = self.inside(uri)
        if found is None:
            raise InvalidArgument(f"{uri!r} is not inside the registry's artifact root", field="artifact_location")
        return found

    def file_uri(self, relative: str) -> str:
        return (self.root / relative).as_uri()

    def path(self, relative: str, sub: str = "") -> Path:
        rel = clean_relative_path(relative)
        sub = clean_relative_path(sub)
        return self.root / rel / sub if sub else self.root / rel

    # -- listing and reading --------------------------------------------------------

    async def list(self, relative: str, sub: str = "") -> list[FileInfo]:
        return await asyncio.to_thread(self._list, relative, sub)

    def _list(self, relative: str, sub: str) -> list[FileInfo]:
        folder = self.path(relative, sub)
        if not folder.is_dir():
            return []
        base = self.path(relative)
        out = []
        for entry in sorted(folder.iterdir()):
            rel = entry.relative_to(base).as_posix()
            out.append(FileInfo(rel, entry.is_dir(), 0 if entry.is_dir() else entry.stat().st_size))
        return out

    async def size(self, relative: str, sub: str = "") -> int | None:
        """The size of one file, None when there is no file there (a folder is not one)."""
        target = self.path(relative, sub)
        return target.stat().st_size if await asyncio.to_thread(target.is_file) else None

    def walk_files(self, relative: str, sub: str = "") -> list[tuple[str, Path]]:
        target = self.path(relative, sub)
        base = self.path(relative)
        if target.is_file():
            return [(target.relative_to(base).as_posix(), target)]
        if not target.is_dir():
            raise NotFound(f"no artifact at {sub or '/'!r}")
        found = []
        for dirpath, dirnames, filenames in os.walk(target):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                found.append((full.relative_to(base).as_posix(), full))
        return found

    async def read_chunks(self, relative: str, sub: str, chunk_size: int) -> AsyncIterator[tuple[str, bytes, int, int]]:
        """(path, data, offset, file_size) for every file under `sub`, in path order."""
        files = await asyncio.to_thread(self.walk_files, relative, sub)
        for rel, full in files:
            size = full.stat().st_size
            handle = await asyncio.to_thread(open, full, "rb")
            try:
                offset = 0
                while True:
                    data = await asyncio.to_thread(handle.read, chunk_size)
                    if not data and offset > 0:
                        break
                    yield rel, data, offset, size
                    offset += len(data)
                    if len(data) < chunk_size:
                        break
            finally:
                handle.close()

    # -- writing ------------------------------------------------------------------

    def writer(self, relative: str) -> ChunkWriter:
        return ChunkWriter(self.path(relative))

    async def copy_tree(self, source: Path | str, relative: str) -> int:
        """Copy a file or folder (a host Path, or a root-relative str) into `relative`; returns the number of files."""
        if isinstance(source, str):
            source = self.path(source)

        def copy() -> int:
            dest = self.path(relative)
            if source.is_file():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / source.name)
                return 1
            if not source.is_dir():
                raise NotFound(f"source {str(source)!r} does not exist")
            shutil.copytree(source, dest, dirs_exist_ok=True)
            return sum(len(files) for _, _, files in os.walk(dest))

        return await asyncio.to_thread(copy)

    async def delete(self, relative: str, sub: str = "") -> None:
        target = self.path(relative, sub)
        if target.is_dir():
            await asyncio.to_thread(shutil.rmtree, target, True)
        elif target.exists():
            target.unlink()


class ChunkWriter:
    """Writes a stream of (path, data, offset) chunks; a file stays open while its chunks arrive."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.files_written = 0
        self.bytes_written = 0
        self._path: str | None = None
        self._handle = None
        self._expected_offset = 0

    async def write(self, path: str, data: bytes, offset: int) -> None:
        rel = clean_relative_path(path, allow_empty=False)
        if rel != self._path:
            if offset != 0:
                raise InvalidArgument(f"first chunk of {rel!r} must start at offset 0, got {offset}", field="offset")
            await self._close_current()
            target = self.base / rel
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            self._handle = await asyncio.to_thread(open, target, "wb")
            self._path, self._expected_offset = rel, 0
            self.files_written += 1
        if offset != self._expected_offset:
            raise InvalidArgument(
                f"chunk of {rel!r} at offset {offset}, expected {self._expected_offset}", field="offset"
            )
        await asyncio.to_thread(self._handle.write, data)
        self._expected_offset += len(data)
        self.bytes_written += len(data)

    async def _close_current(self) -> None:
        if self._handle is not None:
            await asyncio.to_thread(self._handle.close)
            self._handle = None

    async def close(self) -> None:
        await self._close_current()
