"""MLflow model registry endpoints (/api/2.0/mlflow/registered-models, model-versions)."""

from __future__ import annotations

from aiohttp import web

from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.registry import search_filter
from services.registry.core import Registry
from services.registry.mlflow_rest import json_convert as js
from services.registry.mlflow_rest.request_body import PRINCIPAL, params, reply, required, tags, text

API = "/api/2.0/mlflow"


def _version(body: dict) -> int:
    value = required(body, "version")
    if not str(value).isdigit():
        raise InvalidArgument(f"invalid version {value!r}", field="version")
    return int(value)


def add_routes(app: web.Application, registry: Registry, names: js.Names) -> None:
    m = registry.models
    files = registry.ctx.files

    def mv(version) -> dict:
        return js.model_version(version, names, files)

    async def create_model(request):
        body = await params(request)
        model = await m.create_model(
            request[PRINCIPAL], names.full(required(body, "name")), text(body, "description"), tags(body)
        )
        return reply({"registered_model": js.registered_model(model, names)})

    async def _with_latest(principal: str, model) -> dict:
        out = js.registered_model(model, names)
        if model.latest_version:
            page = await m.search_versions(principal, model.full_name, size=1)
            out["latest_versions"] = [mv(v) for v in page.items]
        return out

    async def get_model(request):
        body = await params(request)
        model = await m.get_model(request[PRINCIPAL], names.full(required(body, "name")))
        return reply({"registered_model": await _with_latest(request[PRINCIPAL], model)})

    async def search_models(request):
        body = await params(request)
        contains, exact, tag_tests = "", None, []
        for clause in search_filter.parse(text(body, "filter")):
            # MLflow clients filter models by `name = 'x'`, `name LIKE '%x%'`, and tags (the client itself
            # adds tags.`mlflow.prompt.is_prompt` != 'true').
            if clause.entity == "tags" and clause.op in ("=", "!=") and isinstance(clause.value, str):
                tag_tests.append(clause)
            elif clause.key == "name" and clause.op in ("=", "LIKE", "ILIKE") and isinstance(clause.value, str):
                if clause.op == "=":
                    exact = names.full(clause.value)
                else:
                    contains = clause.value.strip("%")
            else:
                raise InvalidArgument(
                    f"unsupported model filter on {clause.key[:64]!r}: use name =, name LIKE, tags.k = or !=",
                    field="filter",
                )

        def keep(model) -> bool:
            return all((model.tags.get(c.key) == c.value) == (c.op == "=") for c in tag_tests)

        if exact is not None:
            try:
                found = [await m.get_model(request[PRINCIPAL], exact)]
            except (NotFound, PermissionDenied):
                found = []
            found = [x for x in found if keep(x)]
            return reply({"registered_models": [await _with_latest(request[PRINCIPAL], x) for x in found]})
        page = await m.search_models(
            request[PRINCIPAL],
            name_contains=contains,
            size=js.integer(body.get("max_results"), "max_results"),
            token=text(body, "page_token"),
        )
        models = [await _with_latest(request[PRINCIPAL], x) for x in page.items if keep(x)]
        return reply({"registered_models": models, "next_page_token": page.next_token})

    async def update_model(request):
        body = await params(request)
        model = await m.update_model(
            request[PRINCIPAL], names.full(required(body, "name")), description=text(body, "description")
        )
        return reply({"registered_model": js.registered_model(model, names)})

    async def rename_model(request):
        body = await params(request)
        new_name = required(body, "new_name")
        model = await m.rename_model(request[PRINCIPAL], names.full(required(body, "name")), names.full(new_name))
        return reply({"registered_model": js.registered_model(model, names)})

    async def delete_model(request):
        body = await params(request)
        await m.delete_model(request[PRINCIPAL], names.full(required(body, "name")))
        return reply()

    async def set_model_tag(request):
        body = await params(request)
        await m.update_model(
            request[PRINCIPAL],
            names.full(required(body, "name")),
            set_tags={required(body, "key"): text(body, "value")},
        )
        return reply()

    async def delete_model_tag(request):
        body = await params(request)
        await m.update_model(
            request[PRINCIPAL], names.full(required(body, "name")), delete_tags=[required(body, "key")]
        )
        return reply()

    async def latest_versions(request):
        body = await params(request)
        page = await m.search_versions(request[PRINCIPAL], names.full(required(body, "name")), size=1)
        return reply({"model_versions": [mv(v) for v in page.items]})

    async def create_version(request):
        body = await params(request)
        version = await m.create_version(
            request[PRINCIPAL],
            names.full(required(body, "name")),
            required(body, "source"),
            text(body, "run_id"),
            text(body, "description"),
            tags(body),
            text(body, "model_id"),
        )
        return reply({"model_version": mv(version)})

    async def get_version(request):
        body = await params(request)
        version = await m.get_version(request[PRINCIPAL], names.full(required(body, "name")), _version(body))
        return reply({"model_version": mv(version)})

    async def update_version(request):
        body = await params(request)
        version = await m.update_version(
            request[PRINCIPAL],
            names.full(required(body, "name")),
            _version(body),
            description=text(body, "description"),
        )
        return reply({"model_version": mv(version)})

    async def delete_version(request):
        body = await params(request)
        await m.delete_version(request[PRINCIPAL], names.full(required(body, "name")), _version(body))
        return reply()

    async def search_versions(request):
        body = await params(request)
        name, run_id = "", ""
        for clause in search_filter.parse(text(body, "filter")):
            if clause.key not in ("name", "run_id") or clause.op != "=" or not isinstance(clause.value, str):
                raise InvalidArgument(
                    f"unsupported model version filter on {clause.key[:64]!r}: use name = '...' [and run_id = '...']",
                    field="filter",
                )
            name, run_id = (clause.value, run_id) if clause.key == "name" else (name, clause.value)
        if not name:
            raise InvalidArgument("model version searches need name = '<model>' in the filter", field="filter")
        page = await m.search_versions(
            request[PRINCIPAL],
            names.full(name),
            run_id,
            js.integer(body.get("max_results"), "max_results"),
            text(body, "page_token"),
        )
        return reply({"model_versions": [mv(v) for v in page.items], "next_page_token": page.next_token})

    async def set_version_tag(request):
        body = await params(request)
        await m.update_version(
            request[PRINCIPAL],
            names.full(required(body, "name")),
            _version(body),
            set_tags={required(body, "key"): text(body, "value")},
        )
        return reply()

    async def delete_version_tag(request):
        body = await params(request)
        await m.update_version(
            request[PRINCIPAL],
            names.full(required(body, "name")),
            _version(body),
            delete_tags=[required(body, "key")],
        )
        return reply()

    async def download_uri(request):
        body = await params(request)
        version = await m.get_version(request[PRINCIPAL], names.full(required(body, "name")), _version(body))
        return reply({"artifact_uri": files.uri(files.relative(version.storage_location))})

    async def set_alias(request):
        body = await params(request)
        await m.set_alias(
            request[PRINCIPAL], names.full(required(body, "name")), required(body, "alias"), _version(body)
        )
        return reply()

    async def delete_alias(request):
        body = await params(request)
        await m.delete_alias(request[PRINCIPAL], names.full(required(body, "name")), required(body, "alias"))
        return reply()

    async def get_by_alias(request):
        body = await params(request)
        version = await m.version_by_alias(
            request[PRINCIPAL], names.full(required(body, "name")), required(body, "alias")
        )
        return reply({"model_version": mv(version)})

    r = app.router
    r.add_post(f"{API}/registered-models/create", create_model)
    r.add_get(f"{API}/registered-models/get", get_model)
    r.add_get(f"{API}/registered-models/search", search_models)
    r.add_patch(f"{API}/registered-models/update", update_model)
    r.add_post(f"{API}/registered-models/rename", rename_model)
    r.add_delete(f"{API}/registered-models/delete", delete_model)
    r.add_post(f"{API}/registered-models/set-tag", set_model_tag)
    r.add_delete(f"{API}/registered-models/delete-tag", delete_model_tag)
    r.add_post(f"{API}/registered-models/get-latest-versions", latest_versions)
    r.add_post(f"{API}/registered-models/alias", set_alias)
    r.add_delete(f"{API}/registered-models/alias", delete_alias)
    r.add_get(f"{API}/registered-models/alias", get_by_alias)
    r.add_post(f"{API}/model-versions/create", create_version)
    r.add_get(f"{API}/model-versions/get", get_version)
    r.add_patch(f"{API}/model-versions/update", update_version)
    r.add_delete(f"{API}/model-versions/delete", delete_version)
    r.add_get(f"{API}/model-versions/search", search_versions)
    r.add_post(f"{API}/model-versions/set-tag", set_version_tag)
    r.add_delete(f"{API}/model-versions/delete-tag", delete_version_tag)
    r.add_get(f"{API}/model-versions/get-download-uri", download_uri)
