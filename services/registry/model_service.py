"""Registered models, model versions and aliases (the MLflow model registry half, named as Unity Catalog names)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.paging import Page
from services.registry import events
from services.registry.access import Privilege
from services.registry.context import RegistryContext, next_offset_token, page_window
from services.registry.entities import AliasMove, LineageNode, ModelVersion, RegisteredModel
from services.registry.events import Type
from services.registry.names import ModelName, check_alias, check_model_part, check_version
from services.registry.store import lineage as lineage_store
from services.registry.store import models as store
from services.registry.store import securables
from services.registry.store import tracking as tracking_store

_log = logging.getLogger(__name__)

PENDING, READY, FAILED = "PENDING_REGISTRATION", "READY", "FAILED_REGISTRATION"


class ModelRegistry:
    def __init__(self, ctx: RegistryContext, resolve_source) -> None:
        self.ctx = ctx
        # (principal, source, run_id) -> local Path to copy from, or None when there is nothing to copy.
        self._resolve_source = resolve_source
        self._copies: set[asyncio.Task] = set()

    async def _model(self, conn, principal: str, full_name: str, privilege: Privilege, *, lock: bool = False):
        name = ModelName.parse(full_name)
        found = await store.model_with_chain(conn, name, principal, lock=lock)
        self.ctx.require(principal, found[2] if found else None, privilege, f"registered model {full_name!r}")
        return found[0], found[1]

    # -- registered models ------------------------------------------------------------

    async def create_model(
        self, principal: str, full_name: str, description: str = "", tags: dict | None = None
    ) -> RegisteredModel:
        name = ModelName.parse(full_name)
        async with self.ctx.unit() as unit:
            chain = await securables.schema_chain(unit.conn, name.catalog, name.schema, principal)
            self.ctx.require(principal, chain, Privilege.CREATE_MODEL, f"schema {name.schema_name.full!r}")
            if not await store.insert_model(unit.conn, name, description, principal, tags or {}):
                raise AlreadyExists(f"registered model {full_name!r} already exists")
            _, model, _ = await store.model_with_chain(unit.conn, name, principal)
        return model

    async def get_model(self, principal: str, full_name: str) -> RegisteredModel:
        async with self.ctx.read() as conn:
            return (await self._model(conn, principal, full_name, Privilege.EXECUTE))[1]

    async def search_models(
        self,
        principal: str,
        catalog: str = "",
        schema: str = "",
        name_contains: str = "",
        size: int = 0,
        token: str = "",
    ) -> Page:
        offset, size = page_window(token, size)
        async with self.ctx.read() as conn:
            found = await store.search_models(conn, principal, catalog, schema, name_contains)
        visible = [m for m, chain in found if self.ctx.can(principal, chain, Privilege.EXECUTE)]
        chunk = visible[offset : offset + size + 1]
        return Page(chunk[:size], next_offset_token(offset, size, len(chunk)))

    async def update_model(
        self,
        principal: str,
        full_name: str,
        description: str | None = None,
        set_tags: dict | None = None,
        delete_tags=(),
    ) -> RegisteredModel:
        async with self.ctx.unit() as unit:
            model_pk, model = await self._model(unit.conn, principal, full_name, Privilege.MODIFY)
            tags = None
            if set_tags or delete_tags:
                tags = {**model.tags, **(set_tags or {})}
                for key in delete_tags:
                    tags.pop(key, None)
            await store.update_model(unit.conn, model_pk, description=description, tags=tags)
            _, model, _ = await store.model_with_chain(unit.conn, ModelName.parse(full_name), principal)
        return model

    async def rename_model(self, principal: str, full_name: str, new_name: str) -> RegisteredModel:
        name = ModelName.parse(full_name)
        if "." in new_name:
            target = ModelName.parse(new_name)
            if target.schema_name != name.schema_name:
                raise InvalidArgument("a model can only be renamed within its schema", field="new_name")
            new_name = target.name
        check_model_part(new_name)
        new_full = f"{name.catalog}.{name.schema}.{new_name}"
        async with self.ctx.unit() as unit:
            model_pk, _ = await self._model(unit.conn, principal, full_name, Privilege.MANAGE, lock=True)
            if not await store.rename_model(unit.conn, model_pk, new_name):
                raise AlreadyExists(f"registered model {new_full!r} already exists")
            await securables.rename_grants(unit.conn, "REGISTERED_MODEL", full_name, new_full)
            await lineage_store.rename_nodes(unit.conn, "MODEL_VERSION", full_name, new_full)
            await lineage_store.rename_nodes(unit.conn, "REGISTERED_MODEL", full_name, new_full)
            unit.emit(events.model_event(Type.MODEL_RENAMED, principal, full_name, new_model_name=new_full))
            _, model, _ = await store.model_with_chain(unit.conn, ModelName.parse(new_full), principal)
        return model

    async def delete_model(self, principal: str, full_name: str) -> None:
        async with self.ctx.unit() as unit:
            model_pk, _ = await self._model(unit.conn, principal, full_name, Privilege.MANAGE, lock=True)
            await store.delete_model(unit.conn, model_pk, full_name)
            unit.emit(events.model_event(Type.MODEL_DELETED, principal, full_name))
        await self.ctx.files.delete(self._model_folder(model_pk))

    # -- versions ---------------------------------------------------------------------

    @staticmethod
    def _model_folder(model_pk: int) -> str:
        return f"registry/{model_pk}"

    def storage_relative(self, version: ModelVersion) -> str:
        return self.ctx.files.relative(version.storage_location)

    async def create_version(
        self,
        principal: str,
        full_name: str,
        source: str = "",
        run_id: str = "",
        description: str = "",
        tags: dict | None = None,
        model_id: str = "",
    ) -> ModelVersion:
        # Only a caller who may add versions learns anything about the source it names.
        async with self.ctx.unit() as unit:
            await self._model(unit.conn, principal, full_name, Privilege.MODIFY)
        # Resolve (and authorize reading) the source before anything is written.
        source_path = await self._resolve_source(principal, source, run_id) if source else None
        async with self.ctx.unit() as unit:
            model_pk, _ = await self._model(unit.conn, principal, full_name, Privilege.MODIFY, lock=True)
            if run_id:
                # The version links to the run in lineage: the caller must be able to read that run.
                found = await tracking_store.run_with_chain(unit.conn, run_id, principal)
                self.ctx.require(principal, found[1] if found else None, Privilege.EXECUTE, f"run {run_id[:64]!r}")
            number = await store.next_version(unit.conn, model_pk)
            relative = f"{self._model_folder(model_pk)}/versions/{number}"
            version = await store.insert_version(
                unit.conn,
                model_pk,
                full_name,
                version=number,
                source=source,
                run_id=run_id,
                model_id=model_id,
                status=PENDING,
                description=description,
                created_by=principal,
                storage_location=self.ctx.files.file_uri(relative),
                tags=tags or {},
            )
            if run_id:
                await lineage_store.add_edge(
                    unit.conn, _node("RUN", run_id), _node("MODEL_VERSION", f"{full_name}/{number}"), {}, principal
                )
            unit.emit(self._version_event(Type.MODEL_VERSION_CREATED, principal, version))
        if source_path is not None:
            task = asyncio.create_task(self._copy_in(principal, full_name, model_pk, number, source_path, relative))
            self._copies.add(task)
            task.add_done_callback(self._copies.discard)
        return version

    def _version_event(
        self, kind: int, principal: str, version: ModelVersion, message: str = ""
    ) -> events.PendingEvent:
        return events.model_event(
            kind,
            principal,
            version.model_name,
            version=version.version,
            source_uri=version.source,
            storage_location=version.storage_location,
            run_id=version.run_id,
            status_message=message,
        )

    async def _copy_in(
        self, principal: str, full_name: str, model_pk: int, number: int, source: Path, relative: str
    ) -> None:
        try:
            await self.ctx.files.copy_tree(source, relative)
            status, message = READY, ""
        except Exception as exc:  # noqa: BLE001 - the version records why, the service goes on
            _log.warning("copying %s into %s v%d failed: %s", source, full_name, number, exc)
            status, message = FAILED, f"copying {source} failed: {exc}"
        await self._set_status(principal, model_pk, full_name, number, status, message)

    async def _set_status(
        self, principal: str, model_pk: int, full_name: str, number: int, status: str, message: str
    ) -> ModelVersion | None:
        async with self.ctx.unit() as unit:
            current = await store.get_version(unit.conn, model_pk, full_name, number)
            if current is None or current.status != PENDING:
                return current  # deleted meanwhile, or finalized by someone else
            await store.update_version(unit.conn, model_pk, number, status=status, status_message=message)
            version = await store.get_version(unit.conn, model_pk, full_name, number)
            kind = Type.MODEL_VERSION_READY if status == READY else Type.MODEL_VERSION_FAILED
            unit.emit(self._version_event(kind, principal, version, message))
        return version

    async def wait_for_copies(self) -> None:
        if self._copies:
            await asyncio.gather(*self._copies, return_exceptions=True)

    async def finalize_version(self, principal: str, full_name: str, number: int) -> ModelVersion:
        check_version(number)
        async with self.ctx.read() as conn:
            model_pk, _ = await self._model(conn, principal, full_name, Privilege.MODIFY)
            version = await store.get_version(conn, model_pk, full_name, number)
        if version is None:
            raise NotFound(f"model version {full_name}/{number} does not exist")
        if version.status != PENDING:
            raise FailedPrecondition(f"model version {full_name}/{number} is {version.status}, not {PENDING}")
        return await self._set_status(principal, model_pk, full_name, number, READY, "")

    async def get_version(
        self, principal: str, full_name: str, number: int, privilege: Privilege = Privilege.EXECUTE
    ) -> ModelVersion:
        check_version(number)
        async with self.ctx.read() as conn:
            model_pk, _ = await self._model(conn, principal, full_name, privilege)
            version = await store.get_version(conn, model_pk, full_name, number)
        if version is None:
            raise NotFound(f"model version {full_name}/{number} does not exist")
        return version

    async def search_versions(
        self, principal: str, full_name: str, run_id: str = "", size: int = 0, token: str = ""
    ) -> Page:
        offset, size = page_window(token, size)
        async with self.ctx.read() as conn:
            model_pk, _ = await self._model(conn, principal, full_name, Privilege.EXECUTE)
            found = await store.search_versions(conn, model_pk, full_name, run_id, offset, size + 1)
        return Page(found[:size], next_offset_token(offset, size, len(found)))

    async def update_version(
        self,
        principal: str,
        full_name: str,
        number: int,
        description: str | None = None,
        set_tags: dict | None = None,
        delete_tags=(),
    ) -> ModelVersion:
        check_version(number)
        async with self.ctx.unit() as unit:
            model_pk, _ = await self._model(unit.conn, principal, full_name, Privilege.MODIFY)
            version = await store.get_version(unit.conn, model_pk, full_name, number)
            if version is None:
                raise NotFound(f"model version {full_name}/{number} does not exist")
            changes: dict[str, object] = {}
            if description is not None:
                changes["description"] = description
            if set_tags or delete_tags:
                tags = {**version.tags, **(set_tags or {})}
                for key in delete_tags:
                    tags.pop(key, None)
                changes["tags"] = tags
            if changes:
                await store.update_version(unit.conn, model_pk, number, **changes)
            return await store.get_version(unit.conn, model_pk, full_name, number)

    async def delete_version(self, principal: str, full_name: str, number: int) -> None:
        check_version(number)
        async with self.ctx.unit() as unit:
            model_pk, _ = await self._model(unit.conn, principal, full_name, Privilege.MANAGE, lock=True)
            version = await store.get_version(unit.conn, model_pk, full_name, number)
            if version is None:
                raise NotFound(f"model version {full_name}/{number} does not exist")
            for alias in await store.delete_version(unit.conn, model_pk, number):
                await store.record_alias_move(unit.conn, model_pk, alias, "DELETED", 0, number, principal)
                unit.emit(
                    events.model_event(Type.ALIAS_DELETED, principal, full_name, alias=alias, previous_version=number)
                )
            unit.emit(self._version_event(Type.MODEL_VERSION_DELETED, principal, version))
        await self.ctx.files.delete(self.storage_relative(version))

    # -- aliases ----------------------------------------------------------------------

    async def set_alias(self, principal: str, full_name: str, alias: str, number: int) -> ModelVersion:
        check_alias(alias)
        check_version(number)
        async with self.ctx.unit() as unit:
            model_pk, _ = await self._model(unit.conn, principal, full_name, Privilege.MODIFY, lock=True)
            if await store.get_version(unit.conn, model_pk, full_name, number) is None:
                raise NotFound(f"model version {full_name}/{number} does not exist")
            previous = await store.set_alias(unit.conn, model_pk, alias, number, principal)
            unit.emit(
                events.model_event(
                    Type.ALIAS_SET, principal, full_name, version=number, alias=alias, previous_version=previous
                )
            )
            return await store.get_version(unit.conn, model_pk, full_name, number)

    async def delete_alias(self, principal: str, full_name: str, alias: str) -> None:
        check_alias(alias)
        async with self.ctx.unit() as unit:
            model_pk, _ = await self._model(unit.conn, principal, full_name, Privilege.MODIFY, lock=True)
            previous = await store.delete_alias(unit.conn, model_pk, alias, principal)
            if previous is None:
                raise NotFound(f"registered model {full_name!r} has no alias {alias!r}")
            unit.emit(
                events.model_event(Type.ALIAS_DELETED, principal, full_name, alias=alias, previous_version=previous)
            )

    async def version_by_alias(self, principal: str, full_name: str, alias: str) -> ModelVersion:
        check_alias(alias)
        async with self.ctx.read() as conn:
            model_pk, model = await self._model(conn, principal, full_name, Privilege.EXECUTE)
            if alias not in model.aliases:
                raise NotFound(f"registered model {full_name!r} has no alias {alias!r}")
            return await store.get_version(conn, model_pk, full_name, model.aliases[alias])

    async def alias_history(
        self, principal: str, full_name: str, alias: str = "", size: int = 0, token: str = ""
    ) -> Page:
        offset, size = page_window(token, size)
        async with self.ctx.read() as conn:
            model_pk, _ = await self._model(conn, principal, full_name, Privilege.EXECUTE)
            moves: list[AliasMove] = await store.alias_history(conn, model_pk, alias, offset, size + 1)
        return Page(moves[:size], next_offset_token(offset, size, len(moves)))


def _node(kind: str, name: str) -> LineageNode:
    return LineageNode(kind, name)
