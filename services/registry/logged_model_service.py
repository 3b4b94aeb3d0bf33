"""MLflow 3 logged models: what `log_model` creates in an experiment before a version is registered."""

from __future__ import annotations

import uuid

from services.common.errors import InvalidArgument, NotFound
from services.common.paging import Page
from services.registry.access import Privilege
from services.registry.context import RegistryContext, next_offset_token, now_ms, page_window
from services.registry.entities import LoggedModel
from services.registry.store import logged_models as store
from services.registry.store import tracking
from services.registry.tracking_service import TrackingService

STATUSES = ("PENDING", "READY", "FAILED")


class LoggedModels:
    def __init__(self, ctx: RegistryContext, tracking_service: TrackingService) -> None:
        self.ctx = ctx
        self.tracking = tracking_service

    async def _load(self, conn, principal: str, model_id: str, privilege: Privilege) -> LoggedModel:
        model = await store.get(conn, model_id)
        if model is None:
            raise NotFound(f"logged model {model_id!r} does not exist")
        found = await tracking.experiment_with_chain(conn, principal, experiment_id=int(model.experiment_id))
        self.ctx.require(principal, found[1] if found else None, privilege, f"logged model {model_id!r}")
        return model

    async def create(
        self,
        principal: str,
        experiment_id: str,
        name: str = "",
        source_run_id: str = "",
        model_type: str = "",
        tags: dict | None = None,
        params: dict | None = None,
    ) -> LoggedModel:
        model_id = f"m-{uuid.uuid4().hex}"
        async with self.ctx.unit() as unit:
            experiment, _ = await self.tracking._experiment(
                unit.conn, principal, Privilege.MODIFY, experiment_id=experiment_id
            )
            now = now_ms()
            model = LoggedModel(
                model_id=model_id,
                experiment_id=experiment.experiment_id,
                name=name or model_id,
                artifact_location=f"{experiment.artifact_location.rstrip('/')}/models/{model_id}/artifacts",
                source_run_id=source_run_id,
                model_type=model_type,
                status="PENDING",
                lifecycle_stage="active",
                creation_time=now,
                last_updated_time=now,
                tags=tags or {},
                params=params or {},
                metrics=[],
            )
            await store.insert(unit.conn, model)
        return model

    async def get(self, principal: str, model_id: str, privilege: Privilege = Privilege.EXECUTE) -> LoggedModel:
        async with self.ctx.read() as conn:
            return await self._load(conn, principal, model_id, privilege)

    async def update(self, principal: str, model_id: str, **changes: object) -> LoggedModel:
        status = changes.get("status")
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"invalid logged model status {status!r}", field="status")
        async with self.ctx.unit() as unit:
            model = await self._load(unit.conn, principal, model_id, Privilege.MODIFY)
            for key in ("tags", "params"):
                if key in changes:
                    changes[key] = {**getattr(model, key), **changes[key]}
            for key in changes.pop("delete_tags", ()):
                changes.setdefault("tags", dict(model.tags)).pop(key, None)
            if changes:
                await store.update(unit.conn, model_id, now_ms(), **changes)
            return await store.get(unit.conn, model_id)

    async def search(self, principal: str, experiment_ids: list[str], size: int = 0, token: str = "") -> Page:
        offset, size = page_window(token, size)
        async with self.ctx.read() as conn:
            ids = []
            for experiment_id in experiment_ids:
                experiment, _ = await self.tracking._experiment(
                    conn, principal, Privilege.EXECUTE, experiment_id=experiment_id
                )
                ids.append(int(experiment.experiment_id))
            found = await store.search(conn, ids, offset, size + 1)
        return Page(found[:size], next_offset_token(offset, size, len(found)))
