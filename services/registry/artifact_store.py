"""Where the registry's artifacts live: local disk (the default) or an S3-compatible object store.

`TESSERA_REGISTRY_ARTIFACT_URI` picks the store: empty (or `file:///path`) keeps
files under the artifact root on local disk (`ArtifactFiles`); `s3://bucket/prefix`
puts them in S3, MinIO or any S3-compatible store (`S3ArtifactStore`, through
obstore), with `TESSERA_REGISTRY_S3_*` for the endpoint and credentials (the keys
may come from files: `TESSERA_REGISTRY_S3_SECRET_ACCESS_KEY_FILE`).

Both stores take the same root-relative paths, cleaned by `clean_relative_path`,
so nothing reaches outside the root or the prefix; both stream in chunks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from services.common.errors import InvalidArgument, NotFound
from services.registry.artifact_files import SCHEME, ArtifactFiles
from services.registry.entities import FileInfo
from services.registry.names import clean_relative_path
from services.registry.settings import RegistrySettings

# Objects listed or deleted per request: S3's DeleteObjects takes at most 1000 keys.
_BATCH = 1000


class ArtifactWriter(Protocol):
    files_written: int
    bytes_written: int

    async def write(self, path: str, data: bytes, offset: int) -> None: ...

    async def close(self) -> None: ...


class ArtifactStore(Protocol):
    """What the registry asks of a store; `relative` paths are inside the root and already authorized."""

    def relative(self, uri: str) -> str: ...

    def inside(self, uri: str) -> str | None: ...

    def file_uri(self, relative: str) -> str: ...

    async def list(self, relative: str, sub: str = "") -> list[FileInfo]: ...

    async def size(self, relative: str, sub: str = "") -> int | None: ...

    def read_chunks(self, relative: str, sub: str, chunk_size: int) -> AsyncIterator[tuple[str, bytes, int, int]]: ...

    def writer(self, relative: str) -> ArtifactWriter: ...

    async def copy_tree(self, source: Path | str, relative: str) -> int: ...

    async def delete(self, relative: str, sub: str = "") -> None: ...


def open_artifact_store(settings: RegistrySettings) -> ArtifactFiles | S3ArtifactStore:
    uri = settings.registry_artifact_uri.strip()
    if not uri:
        return ArtifactFiles(settings.artifact_root())
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return ArtifactFiles(Path(urlparse(uri).path))
    if scheme == "s3":
        return S3ArtifactStore.from_settings(settings)
    raise ValueError(f"TESSERA_REGISTRY_ARTIFACT_URI={uri!r}: expected empty, file:///path or s3://bucket/prefix")


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


class S3ArtifactStore:
    """Artifacts as objects under `s3://bucket/prefix/`; folders are key prefixes."""

    def __init__(self, store, base_uri: str) -> None:
        self.store = store
        self.base_uri = base_uri.rstrip("/")

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> S3ArtifactStore:
        return cls.connect(
            settings.registry_artifact_uri,
            endpoint=settings.registry_s3_endpoint,
            region=settings.registry_s3_region,
            access_key_id=settings.registry_s3_access_key_id,
            secret_access_key=settings.registry_s3_secret_access_key,
            allow_http=settings.registry_s3_allow_http,
        )

    @classmethod
    def connect(
        cls,
        uri: str,
        *,
        endpoint: str = "",
        region: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        allow_http: bool = False,
    ) -> S3ArtifactStore:
        """A store under `s3://bucket/prefix` (also for other services' files, e.g. training checkpoints)."""
        from obstore.store import S3Store

        parsed = urlparse(uri.strip())
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"{uri!r} is not an s3://bucket/prefix URI")
        bucket, prefix = parsed.netloc, clean_relative_path(parsed.path)
        config: dict[str, str] = {"region": region or "us-east-1"}
        if endpoint:
            config["endpoint"] = endpoint
        if access_key_id:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        client = {"allow_http": allow_http, "timeout": "300s", "connect_timeout": "10s"}
        store = S3Store(bucket, prefix=prefix or None, config=config, client_options=client)
        return cls(store, f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}")

    # -- locations ----------------------------------------------------------------

    @staticmethod
    def uri(relative: str) -> str:
        return f"{SCHEME}/{relative.strip('/')}"

    def inside(self, uri: str) -> str | None:
        """The root-relative path of a URI inside this store, None when it points elsewhere."""
        if uri.startswith(SCHEME):
            return clean_relative_path(uri[len(SCHEME) :])
        if uri == self.base_uri or uri.startswith(self.base_uri + "/"):
            return clean_relative_path(uri[len(self.base_uri) :])
        return None

    def relative(self, uri: str) -> str:
        found = self.inside(uri)
        if found is None:
            raise InvalidArgument(f"{uri!r} is not inside the registry's artifact store", field="artifact_location")
        return found

    def file_uri(self, relative: str) -> str:
        """The object store URI of a root-relative path (what a model version's storage_location holds)."""
        return _join(self.base_uri, clean_relative_path(relative))

    def key(self, relative: str, sub: str = "") -> str:
        return _join(clean_relative_path(relative), clean_relative_path(sub))

    # -- listing and reading --------------------------------------------------------

    async def list(self, relative: str, sub: str = "") -> list[FileInfo]:
        import obstore

        base, folder = self.key(relative), self.key(relative, sub)
        result = await obstore.list_with_delimiter_async(self.store, folder or None)
        cut = len(base) + 1 if base else 0
        out = [FileInfo(prefix.rstrip("/")[cut:], True, 0) for prefix in result["common_prefixes"]]
        out += [FileInfo(meta["path"][cut:], False, meta["size"]) for meta in result["objects"]]
        return sorted(out, key=lambda f: f.path)

    async def _objects(self, key: str) -> list[tuple[str, int]]:
        """(key, size) of every object under `key` (a folder), or of `key` itself when it is one object."""
        import obstore

        found = []
        async for batch in obstore.list(self.store, key or None, chunk_size=_BATCH):
            found += [(meta["path"], meta["size"]) for meta in batch]
        if found or not key:
            return sorted(found)
        size = await self._head(key)
        return [(key, size)] if size is not None else []

    async def _head(self, key: str) -> int | None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return (await obstore.head_async(self.store, key))["size"]
        except (NotFoundError, FileNotFoundError):  # obstore raises the builtin for some stores
            return None

    async def size(self, relative: str, sub: str = "") -> int | None:
        """The size of one file, None when there is no file there (a folder is not one)."""
        return await self._head(self.key(relative, sub))

    async def read_chunks(self, relative: str, sub: str, chunk_size: int) -> AsyncIterator[tuple[str, bytes, int, int]]:
        """(path, data, offset, file_size) for every file under `sub`, in path order; chunks of at most chunk_size."""
        import obstore

        base, target = self.key(relative), self.key(relative, sub)
        objects = await self._objects(target)
        if not objects:
            raise NotFound(f"no artifact at {sub or '/'!r}")
        cut = len(base) + 1 if base else 0
        for key, size in objects:
            rel = key[cut:]
            if size == 0:
                yield rel, b"", 0, 0
                continue
            reader = await obstore.open_reader_async(self.store, key, buffer_size=chunk_size, size=size)
            try:
                offset = 0
                while offset < size:
                    data = bytes(await reader.read(min(chunk_size, size - offset)))
                    if not data:
                        raise NotFound(f"artifact {rel!r} ended at {offset} of {size} bytes")
                    yield rel, data, offset, size
                    offset += len(data)
            finally:
                reader.close()

    # -- writing ------------------------------------------------------------------

    def writer(self, relative: str) -> S3ChunkWriter:
        return S3ChunkWriter(self, self.key(relative))

    async def copy_tree(self, source: Path | str, relative: str) -> int:
        """Copy a local file or folder (a Path), or a folder of this store (a relative str), into `relative`."""
        import obstore

        dest = self.key(relative)
        if isinstance(source, str):
            src = self.key(source)
            objects = await self._objects(src)
            if not objects:
                raise NotFound(f"source {source!r} does not exist")
            single = objects == [(src, objects[0][1])] and len(objects) == 1
            for key, _ in objects:
                name = key.rsplit("/", 1)[-1] if single else key[len(src) + 1 :]
                await obstore.copy_async(self.store, key, _join(dest, name))
            return len(objects)
        if source.is_file():
            await obstore.put_async(self.store, _join(dest, source.name), source)
            return 1
        if not source.is_dir():
            raise NotFound(f"source {str(source)!r} does not exist")
        files = await asyncio.to_thread(_local_files, source)
        for rel, full in files:
            await obstore.put_async(self.store, _join(dest, rel), full)
        return len(files)

    async def delete(self, relative: str, sub: str = "") -> None:
        import obstore

        keys = [key for key, _ in await self._objects(self.key(relative, sub))]
        for start in range(0, len(keys), _BATCH):
            await obstore.delete_async(self.store, keys[start : start + _BATCH])


def _local_files(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            found.append((full.relative_to(folder).as_posix(), full))
    return found


class S3ChunkWriter:
    """Writes (path, data, offset) chunks as objects; a file's chunks stream into one multipart upload."""

    def __init__(self, store: S3ArtifactStore, base: str) -> None:
        self.store = store
        self.base = base
        self.files_written = 0
        self.bytes_written = 0
        self._path: str | None = None
        self._handle = None
        self._expected_offset = 0

    async def write(self, path: str, data: bytes, offset: int) -> None:
        import obstore

        rel = clean_relative_path(path, allow_empty=False)
        if rel != self._path:
            if offset != 0:
                raise InvalidArgument(f"first chunk of {rel!r} must start at offset 0, got {offset}", field="offset")
            await self._close_current()
            self._handle = obstore.open_writer_async(self.store.store, _join(self.base, rel))
            self._path, self._expected_offset = rel, 0
            self.files_written += 1
        if offset != self._expected_offset:
            raise InvalidArgument(
                f"chunk of {rel!r} at offset {offset}, expected {self._expected_offset}", field="offset"
            )
        if data:
            await self._handle.write(data)
        self._expected_offset += len(data)
        self.bytes_written += len(data)

    async def _close_current(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            await handle.close()

    async def close(self) -> None:
        await self._close_current()
