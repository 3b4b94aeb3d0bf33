"""Core types <-> MLflow's JSON (the proto3 JSON of mlflow/protos, field names as MLflow writes them)."""

from __future__ import annotations

import math
from datetime import datetime

from services.common.errors import InvalidArgument
from services.registry import entities as e
from services.registry.artifact_files import ArtifactFiles

_LOGGED_STATUS_OUT = {
    "PENDING": "LOGGED_MODEL_PENDING",
    "READY": "LOGGED_MODEL_READY",
    "FAILED": "LOGGED_MODEL_UPLOAD_FAILED",
}
LOGGED_STATUS_IN = {v: k for k, v in _LOGGED_STATUS_OUT.items()}


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def kv(mapping: dict[str, str]) -> list[dict]:
    return [{"key": k, "value": v} for k, v in sorted(mapping.items())]


def number(value, field: str) -> float:
    """A metric value: JSON numbers, or the strings proto3 JSON uses for NaN and infinities."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{field}: expected a number, got {value!r}", field=field)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # accepts "NaN", "Infinity", "-Infinity", "1e3"
        except ValueError:
            pass
    raise InvalidArgument(f"{field}: expected a number, got {value!r}", field=field)


def integer(value, field: str, default: int | None = 0) -> int | None:
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{field}: expected an integer, got {value!r}", field=field) from None


def metric_value(value: float) -> float | str:
    # Python's json writes NaN/Infinity bare; MLflow's server does the same and its client reads both.
    return (
        value if math.isfinite(value) else ("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))
    )


def experiment(x: e.Experiment) -> dict:
    return {
        "experiment_id": x.experiment_id,
        "name": x.name,
        "artifact_location": x.artifact_location,
        "lifecycle_stage": x.lifecycle_stage,
        "creation_time": x.creation_time,
        "last_update_time": x.last_update_time,
        "tags": kv(x.tags),
    }


def metric(m: e.Metric) -> dict:
    return {"key": m.key, "value": metric_value(m.value), "timestamp": m.timestamp, "step": m.step}


def run(r: e.Run) -> dict:
    i = r.info
    info = {
        "run_id": i.run_id,
        "run_uuid": i.run_id,
        "run_name": i.run_name,
        "experiment_id": i.experiment_id,
        "user_id": i.user_id,
        "status": i.status,
        "start_time": i.start_time,
        "artifact_uri": i.artifact_uri,
        "lifecycle_stage": i.lifecycle_stage,
    }
    if i.end_time:
        info["end_time"] = i.end_time
    return {
        "info": info,
        "data": {"metrics": [metric(m) for m in r.metrics], "params": kv(r.params), "tags": kv(r.tags)},
        "inputs": {},
        "outputs": {},
    }


class Names:
    """MLflow model names <-> `catalog.schema.model`: names without dots live in the default schema."""

    def __init__(self, catalog: str, schema: str) -> None:
        self.prefix = f"{catalog}.{schema}."

    def full(self, name: str) -> str:
        if not name:
            raise InvalidArgument("model name is required", field="name")
        return name if "." in name else self.prefix + name

    def short(self, full_name: str) -> str:
        return full_name[len(self.prefix) :] if full_name.startswith(self.prefix) else full_name


def model_version(v: e.ModelVersion, names: Names, files: ArtifactFiles) -> dict:
    out = {
        "name": names.short(v.model_name),
        "version": str(v.version),
        "creation_timestamp": ms(v.created_at),
        "last_updated_timestamp": ms(v.updated_at),
        "user_id": v.created_by,
        "current_stage": "None",
        "description": v.description,
        "source": v.source,
        "run_id": v.run_id,
        "status": v.status,
        "status_message": v.status_message,
        "tags": kv(v.tags),
        "aliases": v.aliases,
        "storage_location": files.uri(files.relative(v.storage_location)),
    }
    if v.model_id:
        out["model_id"] = v.model_id
    return out


def registered_model(m: e.RegisteredModel, names: Names) -> dict:
    return {
        "name": names.short(m.full_name),
        "creation_timestamp": ms(m.created_at),
        "last_updated_timestamp": ms(m.updated_at),
        "user_id": m.owner,
        "description": m.description,
        "tags": kv(m.tags),
        "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(m.aliases.items())],
    }


def logged_model(m: e.LoggedModel) -> dict:
    return {
        "info": {
            "model_id": m.model_id,
            "experiment_id": m.experiment_id,
            "name": m.name,
            "creation_timestamp_ms": m.creation_time,
            "last_updated_timestamp_ms": m.last_updated_time,
            "artifact_uri": m.artifact_location,
            "status": _LOGGED_STATUS_OUT.get(m.status, "LOGGED_MODEL_PENDING"),
            "model_type": m.model_type,
            "source_run_id": m.source_run_id,
            "tags": kv(m.tags),
        },
        "data": {"params": kv(m.params), "metrics": m.metrics},
    }
