"""The artifact store's contract, the same on local disk and on a real MinIO (S3): chunked writes and
reads, listings, copies from the host and within the store, deletes, and paths that stay under the root."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from services.common.config import load
from services.common.errors import InvalidArgument, NotFound
from services.registry.artifact_store import S3ArtifactStore, open_artifact_store
from services.registry.settings import RegistrySettings
from tests.integration.registry import minio_server

pytestmark = pytest.mark.integration

minio = pytest.fixture(scope="module")(minio_server.minio_fixture)


@pytest.fixture(params=["local", "minio"])
def store(request, tmp_path):
    if request.param == "local":
        return open_artifact_store(load(RegistrySettings, registry_artifact_root=tmp_path / "root"))
    server = request.getfixturevalue("minio")
    found = open_artifact_store(load(RegistrySettings, **minio_server.s3_settings(server, uuid.uuid4().hex)))
    assert isinstance(found, S3ArtifactStore)
    return found


FILES = {"config.json": b"{}", "weights/part-0.bin": os.urandom(3 * 1024 * 1024 + 5), "empty.txt": b""}


async def _write(store, relative: str, files: dict[str, bytes], step: int = 1024 * 1024) -> None:
    writer = store.writer(relative)
    try:
        for path, data in files.items():
            for offset in range(0, max(len(data), 1), step):
                await writer.write(path, data[offset : offset + step], offset)
    finally:
        await writer.close()
    assert writer.files_written == len(files)
    assert writer.bytes_written == sum(len(d) for d in files.values())


async def _read(store, relative: str, sub: str = "", chunk: int = 256 * 1024) -> dict[str, bytes]:
    got: dict[str, bytearray] = {}
    async for path, data, offset, size in store.read_chunks(relative, sub, chunk):
        assert len(data) <= chunk
        buf = got.setdefault(path, bytearray())
        assert offset == len(buf)
        buf.extend(data)
        assert len(buf) <= size
    return {p: bytes(b) for p, b in got.items()}


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}


async def test_files_written_in_chunks_read_back_the_same_in_bounded_chunks(store):
    await _write(store, "registry/1/versions/1", FILES)
    assert _digests(await _read(store, "registry/1/versions/1")) == _digests(FILES)
    assert await _read(store, "registry/1/versions/1", "config.json") == {"config.json": b"{}"}
    assert await _read(store, "registry/1/versions/1", "weights") == {"weights/part-0.bin": FILES["weights/part-0.bin"]}
    assert await store.size("registry/1/versions/1", "weights/part-0.bin") == len(FILES["weights/part-0.bin"])
    assert await store.size("registry/1/versions/1", "weights") is None
    assert await store.size("registry/1/versions/1", "absent") is None
    with pytest.raises(NotFound):
        await _read(store, "registry/1/versions/1", "absent")


async def test_listings_show_files_with_sizes_and_folders(store):
    await _write(store, "7/run/artifacts", FILES)
    listed = await store.list("7/run/artifacts")
    assert [(f.path, f.is_dir, f.size) for f in listed] == [
        ("config.json", False, 2),
        ("empty.txt", False, 0),
        ("weights", True, 0),
    ]
    inner = await store.list("7/run/artifacts", "weights")
    assert [(f.path, f.is_dir) for f in inner] == [("weights/part-0.bin", False)]
    assert await store.list("7/run/artifacts", "nothing-here") == []


async def test_chunks_out_of_order_are_refused(store):
    writer = store.writer("x")
    try:
        with pytest.raises(InvalidArgument, match="offset 0"):
            await writer.write("a.bin", b"data", 4)
        await writer.write("a.bin", b"data", 0)
        with pytest.raises(InvalidArgument, match="expected 4"):
            await writer.write("a.bin", b"more", 9)
    finally:
        await writer.close()


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", "/..", "a//b/..", "nul\x00byte"])
async def test_paths_that_would_leave_the_root_are_refused(store, bad):
    writer = store.writer("safe")
    try:
        with pytest.raises(InvalidArgument):
            await writer.write(bad, b"x", 0)
    finally:
        await writer.close()
    with pytest.raises(InvalidArgument):
        await store.list("safe", bad)
    with pytest.raises(InvalidArgument):
        await store.delete(bad)
    with pytest.raises(InvalidArgument):
        store.writer(bad)


def test_uris_outside_the_store_are_refused(store):
    for outside in ("s3://another-bucket/x", "file:///etc/passwd", "/etc/passwd"):
        assert store.inside(outside) is None
        with pytest.raises(InvalidArgument):
            store.relative(outside)
    with pytest.raises(InvalidArgument):
        store.relative("mlflow-artifacts:/../x")
    assert store.relative("mlflow-artifacts:/3/abc/artifacts") == "3/abc/artifacts"
    own = store.file_uri("registry/2/versions/1")
    assert store.relative(own) == "registry/2/versions/1"


async def test_copies_from_the_host_and_within_the_store(store, tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.pt").write_bytes(os.urandom(2 * 1024 * 1024))
    (folder / "sub" / "signature.json").write_text('{"inputs": []}')
    assert await store.copy_tree(folder, "registry/3/versions/1") == 2
    assert await store.copy_tree(folder / "model.pt", "registry/3/versions/2") == 1
    assert [f.path for f in await store.list("registry/3/versions/2")] == ["model.pt"]
    # A model version registered from a run's folder: copied inside the store, not through the host.
    assert await store.copy_tree("registry/3/versions/1", "registry/3/versions/3") == 2
    copied = await _read(store, "registry/3/versions/3")
    assert _digests(copied) == _digests(
        {"model.pt": (folder / "model.pt").read_bytes(), "sub/signature.json": b'{"inputs": []}'}
    )
    with pytest.raises(NotFound):
        await store.copy_tree("registry/3/no-such-folder", "registry/3/versions/4")
    with pytest.raises(NotFound):
        await store.copy_tree(tmp_path / "absent", "registry/3/versions/5")


async def test_deletes_remove_a_folder_or_one_file_and_nothing_beside_it(store):
    await _write(store, "registry/4/versions/1", FILES)
    await _write(store, "registry/4/versions/10", {"keep.txt": b"keep"})
    await store.delete("registry/4/versions/1", "config.json")
    assert [f.path for f in await store.list("registry/4/versions/1")] == ["empty.txt", "weights"]
    await store.delete("registry/4/versions/1")
    assert await store.list("registry/4/versions/1") == []
    # A sibling whose name starts the same is another folder.
    assert await _read(store, "registry/4/versions/10") == {"keep.txt": b"keep"}
    await store.delete("registry/4/versions/1")  # deleting what is gone is fine


def test_the_artifact_uri_picks_the_store_and_a_wrong_one_fails_at_start(tmp_path):
    local = open_artifact_store(load(RegistrySettings, registry_artifact_uri=f"file://{tmp_path}/elsewhere"))
    assert local.file_uri("a").startswith(f"file://{tmp_path}/elsewhere/")
    for wrong in ("gs://bucket/x", "s3://", "s3:///prefix-without-bucket", "s3://bucket/../up"):
        with pytest.raises((ValueError, InvalidArgument)):
            open_artifact_store(load(RegistrySettings, registry_artifact_uri=wrong))
