"""The mlflow-artifacts proxy (/api/2.0/mlflow-artifacts/artifacts/...), as MLflow's http artifact repository calls it.

Bodies stream to and from the artifact store in chunks; paths are authorized like the gRPC
artifact targets (the experiment's or the model's privileges).
"""

from __future__ import annotations

from aiohttp import web

from services.common.errors import NotFound
from services.registry.core import Registry
from services.registry.mlflow_rest.request_body import PRINCIPAL, reply
from services.registry.names import clean_relative_path

PREFIX = "/api/2.0/mlflow-artifacts/artifacts"
CHUNK = 1024 * 1024


def add_routes(app: web.Application, registry: Registry) -> None:
    files = registry.ctx.files
    artifacts = registry.artifacts

    async def upload(request: web.Request):
        path = await artifacts.authorize_path(request[PRINCIPAL], request.match_info["path"], write=True)
        folder, _, name = path.rpartition("/")
        writer = files.writer(folder)
        try:
            offset = 0
            async for data in request.content.iter_chunked(CHUNK):
                await writer.write(name, data, offset)
                offset += len(data)
            if offset == 0:
                await writer.write(name, b"", 0)
        finally:
            await writer.close()
        return reply()

    async def download(request: web.Request):
        path = await artifacts.authorize_path(request[PRINCIPAL], request.match_info["path"], write=False)
        size = await files.size(path)
        if size is None:
            raise NotFound(f"no artifact at {path!r}")
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        folder, _, name = path.rpartition("/")
        async for _, data, _, _ in files.read_chunks(folder, name, CHUNK):
            await response.write(data)
        await response.write_eof()
        return response

    async def listing(request: web.Request):
        raw = request.query.get("path", "")
        if not clean_relative_path(raw):
            return reply({"files": []})
        path = await artifacts.authorize_path(request[PRINCIPAL], raw, write=False)
        entries = await files.list(path)
        return reply({"files": [_entry(f.path.rsplit("/", 1)[-1], f.is_dir, f.size) for f in entries]})

    async def delete(request: web.Request):
        path = await artifacts.authorize_path(request[PRINCIPAL], request.match_info["path"], write=True)
        await files.delete(path)
        return reply()

    r = app.router
    r.add_put(PREFIX + "/{path:.+}", upload)
    r.add_get(PREFIX + "/{path:.+}", download)
    r.add_get(PREFIX, listing)
    r.add_delete(PREFIX + "/{path:.+}", delete)


def _entry(name: str, is_dir: bool, size: int) -> dict:
    return {"path": name, "is_dir": True} if is_dir else {"path": name, "is_dir": False, "file_size": size}
