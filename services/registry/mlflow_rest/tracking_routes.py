"""MLflow tracking endpoints (/api/2.0/mlflow/experiments, runs, metrics, logged-models)."""

from __future__ import annotations

from aiohttp import web

from services.common.errors import InvalidArgument
from services.registry.artifact_service import Target
from services.registry.context import now_ms
from services.registry.core import Registry
from services.registry.entities import LineageNode, MetricColumns
from services.registry.mlflow_rest import json_convert as js
from services.registry.mlflow_rest.request_body import PRINCIPAL, params, reply, required, tags, text

API = "/api/2.0/mlflow"


def _ids(body: dict, key: str = "experiment_ids") -> list[str]:
    value = body.get(key) or []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _order(body: dict) -> list[str]:
    value = body.get("order_by") or []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _metrics(items, now: int) -> MetricColumns:
    if not isinstance(items, list):
        raise InvalidArgument("'metrics' must be a list", field="metrics")
    out = MetricColumns()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise InvalidArgument("each metric needs a string key", field="metrics")
        value, step, timestamp = item.get("value"), item.get("step", 0), item.get("timestamp", now)
        # The hot path: plain JSON numbers need no further checks (bool is an int subclass, hence `type`).
        if type(value) is not float:
            value = js.number(value, "metrics.value")
        if type(step) is not int:
            step = js.integer(step, "metrics.step")
        if type(timestamp) is not int:
            timestamp = js.integer(timestamp, "metrics.timestamp", now)
        out.keys.append(item["key"])
        out.values.append(value)
        out.steps.append(step)
        out.timestamps.append(timestamp)
    return out


def add_routes(app: web.Application, registry: Registry) -> None:
    t = registry.tracking
    lm = registry.logged_models

    async def create_experiment(request):
        body = await params(request)
        x = await t.create_experiment(
            request[PRINCIPAL], required(body, "name"), text(body, "artifact_location"), tags(body)
        )
        return reply({"experiment_id": x.experiment_id})

    async def get_experiment(request):
        body = await params(request)
        return reply(
            {
                "experiment": js.experiment(
                    await t.get_experiment(request[PRINCIPAL], experiment_id=required(body, "experiment_id"))
                )
            }
        )

    async def get_experiment_by_name(request):
        body = await params(request)
        return reply(
            {
                "experiment": js.experiment(
                    await t.get_experiment(request[PRINCIPAL], name=required(body, "experiment_name"))
                )
            }
        )

    async def search_experiments(request):
        body = await params(request)
        page = await t.search_experiments(
            request[PRINCIPAL],
            text(body, "filter"),
            _view(body),
            _order(body),
            js.integer(body.get("max_results"), "max_results"),
            text(body, "page_token"),
        )
        return reply({"experiments": [js.experiment(x) for x in page.items], "next_page_token": page.next_token})

    async def delete_experiment(request):
        body = await params(request)
        await t.set_experiment_stage(request[PRINCIPAL], required(body, "experiment_id"), "deleted")
        return reply()

    async def restore_experiment(request):
        body = await params(request)
        await t.set_experiment_stage(request[PRINCIPAL], required(body, "experiment_id"), "active")
        return reply()

    async def update_experiment(request):
        body = await params(request)
        await t.rename_experiment(request[PRINCIPAL], required(body, "experiment_id"), required(body, "new_name"))
        return reply()

    async def set_experiment_tag(request):
        body = await params(request)
        await t.set_experiment_tag(
            request[PRINCIPAL], required(body, "experiment_id"), required(body, "key"), text(body, "value")
        )
        return reply()

    async def delete_experiment_tag(request):
        body = await params(request)
        await t.set_experiment_tag(request[PRINCIPAL], required(body, "experiment_id"), required(body, "key"), None)
        return reply()

    async def create_run(request):
        body = await params(request)
        run = await t.create_run(
            request[PRINCIPAL],
            required(body, "experiment_id"),
            text(body, "run_name"),
            js.integer(body.get("start_time"), "start_time"),
            tags(body),
            text(body, "user_id"),
        )
        return reply({"run": js.run(run)})

    async def update_run(request):
        body = await params(request)
        run_id = text(body, "run_id") or required(body, "run_uuid")
        run = await t.update_run(
            request[PRINCIPAL],
            run_id,
            text(body, "status"),
            js.integer(body.get("end_time"), "end_time", None),
            text(body, "run_name"),
        )
        return reply({"run_info": js.run(run)["info"]})

    async def get_run(request):
        body = await params(request)
        run_id = text(body, "run_id") or required(body, "run_uuid")
        return reply({"run": js.run(await t.get_run(request[PRINCIPAL], run_id))})

    async def search_runs(request):
        body = await params(request)
        page = await t.search_runs(
            request[PRINCIPAL],
            _ids(body),
            text(body, "filter"),
            _view(body, "run_view_type"),
            _order(body),
            js.integer(body.get("max_results"), "max_results"),
            text(body, "page_token"),
        )
        return reply({"runs": [js.run(r) for r in page.items], "next_page_token": page.next_token})

    async def set_stage(request, stage: str):
        body = await params(request)
        await t.set_run_stage(request[PRINCIPAL], required(body, "run_id"), stage)
        return reply()

    async def delete_run(request):
        return await set_stage(request, "deleted")

    async def restore_run(request):
        return await set_stage(request, "active")

    async def log_batch(request):
        body = await params(request)
        metrics = _metrics(body.get("metrics") or [], now_ms())
        await t.log_batch(
            request[PRINCIPAL],
            required(body, "run_id"),
            metrics,
            list(tags(body, "params").items()),
            list(tags(body, "tags").items()),
        )
        return reply()

    async def log_metric(request):
        body = await params(request)
        metrics = _metrics([{**body, "key": required(body, "key")}], now_ms())
        await t.log_batch(request[PRINCIPAL], text(body, "run_id") or required(body, "run_uuid"), metrics)
        return reply()

    async def log_param(request):
        body = await params(request)
        run_id = text(body, "run_id") or required(body, "run_uuid")
        await t.log_batch(request[PRINCIPAL], run_id, [], [(required(body, "key"), text(body, "value"))])
        return reply()

    async def set_tag(request):
        body = await params(request)
        run_id = text(body, "run_id") or required(body, "run_uuid")
        await t.log_batch(request[PRINCIPAL], run_id, [], [], [(required(body, "key"), text(body, "value"))])
        return reply()

    async def delete_tag(request):
        body = await params(request)
        await t.delete_run_tag(request[PRINCIPAL], required(body, "run_id"), required(body, "key"))
        return reply()

    async def metric_history(request):
        body = await params(request)
        run_id = text(body, "run_id") or required(body, "run_uuid")
        page = await t.metric_history(
            request[PRINCIPAL],
            run_id,
            required(body, "metric_key"),
            js.integer(body.get("max_results"), "max_results"),
            text(body, "page_token"),
        )
        return reply({"metrics": [js.metric(m) for m in page.items], "next_page_token": page.next_token})

    async def log_inputs(request):
        # Datasets a run read become lineage: DATASET `<name>@<digest>` -> RUN.
        body = await params(request)
        run_id = required(body, "run_id")
        await t.get_run(request[PRINCIPAL], run_id)
        for item in body.get("datasets") or []:
            dataset = item.get("dataset") or {} if isinstance(item, dict) else {}
            name = text(dataset, "name")
            if not name:
                raise InvalidArgument("each dataset input needs a dataset name", field="datasets")
            digest = text(dataset, "digest")
            await registry.lineage.add_edge(
                request[PRINCIPAL],
                LineageNode("DATASET", f"{name}@{digest}" if digest else name),
                LineageNode("RUN", run_id),
                {"source_type": text(dataset, "source_type"), "source": text(dataset, "source")[:2000]},
            )
        return reply()

    async def accepted(request):
        # Run inputs/outputs (datasets, logged-model links): accepted; the model link is kept on the logged model.
        body = await params(request)
        await t.get_run(request[PRINCIPAL], required(body, "run_id"))
        return reply()

    async def list_run_artifacts(request):
        body = await params(request)
        run_id = text(body, "run_id") or required(body, "run_uuid")
        files = await registry.artifacts.list(request[PRINCIPAL], Target(run_id=run_id), text(body, "path"))
        return reply({"files": [{"path": f.path, "is_dir": f.is_dir, "file_size": f.size} for f in files]})

    # -- MLflow 3 logged models ------------------------------------------------------------

    async def create_logged_model(request):
        body = await params(request)
        model = await lm.create(
            request[PRINCIPAL],
            required(body, "experiment_id"),
            text(body, "name"),
            text(body, "source_run_id"),
            text(body, "model_type"),
            tags(body),
            tags(body, "params"),
        )
        return reply({"model": js.logged_model(model)})

    async def get_logged_model(request):
        return reply({"model": js.logged_model(await lm.get(request[PRINCIPAL], request.match_info["model_id"]))})

    async def finalize_logged_model(request):
        body = await params(request)
        status = js.LOGGED_STATUS_IN.get(text(body, "status"))
        if status is None:
            raise InvalidArgument(f"invalid logged model status {body.get('status')!r}", field="status")
        model = await lm.update(request[PRINCIPAL], request.match_info["model_id"], status=status)
        return reply({"model": js.logged_model(model)})

    async def set_logged_model_tags(request):
        body = await params(request)
        model = await lm.update(request[PRINCIPAL], request.match_info["model_id"], tags=tags(body))
        return reply({"model": js.logged_model(model)})

    async def delete_logged_model_tag(request):
        await lm.update(request[PRINCIPAL], request.match_info["model_id"], delete_tags=[request.match_info["key"]])
        return reply()

    async def log_logged_model_params(request):
        body = await params(request)
        await lm.update(request[PRINCIPAL], request.match_info["model_id"], params=tags(body, "params"))
        return reply()

    async def delete_logged_model(request):
        await lm.update(request[PRINCIPAL], request.match_info["model_id"], lifecycle_stage="deleted")
        return reply()

    async def search_logged_models(request):
        body = await params(request)
        page = await lm.search(
            request[PRINCIPAL],
            _ids(body),
            js.integer(body.get("max_results"), "max_results"),
            text(body, "page_token"),
        )
        return reply({"models": [js.logged_model(m) for m in page.items], "next_page_token": page.next_token})

    r = app.router
    r.add_post(f"{API}/experiments/create", create_experiment)
    r.add_get(f"{API}/experiments/get", get_experiment)
    r.add_get(f"{API}/experiments/get-by-name", get_experiment_by_name)
    r.add_route("*", f"{API}/experiments/search", search_experiments)
    r.add_post(f"{API}/experiments/delete", delete_experiment)
    r.add_post(f"{API}/experiments/restore", restore_experiment)
    r.add_post(f"{API}/experiments/update", update_experiment)
    r.add_post(f"{API}/experiments/set-experiment-tag", set_experiment_tag)
    r.add_post(f"{API}/experiments/delete-experiment-tag", delete_experiment_tag)
    r.add_post(f"{API}/runs/create", create_run)
    r.add_post(f"{API}/runs/update", update_run)
    r.add_get(f"{API}/runs/get", get_run)
    r.add_route("*", f"{API}/runs/search", search_runs)
    r.add_post(f"{API}/runs/delete", delete_run)
    r.add_post(f"{API}/runs/restore", restore_run)
    r.add_post(f"{API}/runs/log-batch", log_batch)
    r.add_post(f"{API}/runs/log-metric", log_metric)
    r.add_post(f"{API}/runs/log-parameter", log_param)
    r.add_post(f"{API}/runs/set-tag", set_tag)
    r.add_post(f"{API}/runs/delete-tag", delete_tag)
    r.add_post(f"{API}/runs/log-inputs", log_inputs)
    r.add_post(f"{API}/runs/outputs", accepted)
    r.add_post(f"{API}/runs/log-model", accepted)
    r.add_get(f"{API}/metrics/get-history", metric_history)
    r.add_get(f"{API}/artifacts/list", list_run_artifacts)
    r.add_post(f"{API}/logged-models", create_logged_model)
    r.add_post(f"{API}/logged-models/search", search_logged_models)
    r.add_get(f"{API}/logged-models/{{model_id}}", get_logged_model)
    r.add_patch(f"{API}/logged-models/{{model_id}}", finalize_logged_model)
    r.add_delete(f"{API}/logged-models/{{model_id}}", delete_logged_model)
    r.add_patch(f"{API}/logged-models/{{model_id}}/tags", set_logged_model_tags)
    r.add_delete(f"{API}/logged-models/{{model_id}}/tags/{{key}}", delete_logged_model_tag)
    r.add_post(f"{API}/logged-models/{{model_id}}/params", log_logged_model_params)


def _view(body: dict, key: str = "view_type") -> str:
    value = str(body.get(key) or "ACTIVE_ONLY")
    return {"1": "ACTIVE_ONLY", "2": "DELETED_ONLY", "3": "ALL"}.get(value, value)
