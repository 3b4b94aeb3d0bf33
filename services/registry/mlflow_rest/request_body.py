"""Reading MLflow requests: JSON bodies for POST/PATCH/DELETE, query strings for GET."""

from __future__ import annotations

import json

from aiohttp import web

from services.common.errors import InvalidArgument

# The caller, set by the server's middleware from the bearer token.
PRINCIPAL = web.RequestKey("principal", str)


async def params(request: web.Request) -> dict:
    """The request's fields; GET's repeated query keys become lists."""
    if request.method == "GET":
        out: dict = {}
        for key in request.query:
            values = request.query.getall(key)
            out[key] = values if len(values) > 1 or key in _REPEATED else values[0]
        return out
    raw = await request.read()
    if not raw.strip():
        out = {}
    else:
        out = json.loads(raw)
    if not isinstance(out, dict):
        raise InvalidArgument("request body must be a JSON object")
    for key in request.query:  # DELETE calls sometimes carry fields in the query
        out.setdefault(key, request.query[key])
    return out


_REPEATED = {"experiment_ids", "order_by", "run_ids"}


def required(body: dict, key: str) -> str:
    value = body.get(key)
    if value is None or value == "":
        raise InvalidArgument(f"missing value for required parameter '{key}'", field=key)
    if not isinstance(value, str | int):
        raise InvalidArgument(f"parameter '{key}' must be a string, got {value!r}", field=key)
    return str(value)


def text(body: dict, key: str, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidArgument(f"parameter '{key}' must be a string, got {value!r}", field=key)
    return str(value)


def tags(body: dict, key: str = "tags") -> dict[str, str]:
    items = body.get(key) or []
    if not isinstance(items, list):
        raise InvalidArgument(f"'{key}' must be a list of {{key, value}}", field=key)
    out = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise InvalidArgument(f"'{key}' entries need a string key", field=key)
        out[item["key"]] = "" if item.get("value") is None else str(item["value"])
    return out


def reply(payload: dict | None = None) -> web.Response:
    return web.json_response(payload or {}, dumps=lambda obj: json.dumps(obj, allow_nan=False))
