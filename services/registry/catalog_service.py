"""Catalogs, schemas, grants, ownership and privilege checks."""

from __future__ import annotations

import re

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.common.paging import Page
from services.registry import events
from services.registry.access import (
    REGISTERED_TYPES,
    SCHEMA_LEVEL_TYPES,
    TOP_LEVEL_TYPES,
    Chain,
    Decision,
    Privilege,
    SecurableType,
)
from services.registry.context import RegistryContext, next_offset_token, page_window
from services.registry.entities import Catalog, Schema, TopLevelSecurable
from services.registry.events import Type
from services.registry.names import ModelName, SchemaName, check_part
from services.registry.store import models as model_store
from services.registry.store import securables, tracking

# The privileges that make sense on each kind of securable (granted there, or inherited to below).
# SELECT reads the data an endpoint or a monitor holds; nothing under a catalog holds such data, and
# endpoints and monitors sit under no catalog, so SELECT is grantable on those two and on datasets
# (rows that training reads) only.
_GRANTABLE = {
    SecurableType.CATALOG: set(Privilege) - {Privilege.SELECT},
    SecurableType.SCHEMA: set(Privilege) - {Privilege.USE_CATALOG, Privilege.CREATE_SCHEMA, Privilege.SELECT},
    SecurableType.REGISTERED_MODEL: {Privilege.EXECUTE, Privilege.MODIFY, Privilege.MANAGE},
    SecurableType.EXPERIMENT: {Privilege.EXECUTE, Privilege.MODIFY, Privilege.MANAGE},
    SecurableType.ENDPOINT: {Privilege.EXECUTE, Privilege.MANAGE, Privilege.SELECT},
    SecurableType.MONITOR: {Privilege.MANAGE, Privilege.SELECT},
    SecurableType.DATASET: {Privilege.SELECT, Privilege.MODIFY, Privilege.MANAGE},
}

# Endpoint names and monitor ids: what serving and monitoring allow, with room to spare.
_TOP_LEVEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,254}")


def check_top_level_name(kind: SecurableType, name: str) -> str:
    if not _TOP_LEVEL_NAME.fullmatch(name or ""):
        raise InvalidArgument(
            f"invalid {kind.lower()} name {name[:64]!r}: letters, digits, '_', '.', ':' and '-' (max 255)",
            field="securable_full_name",
        )
    return name


class CatalogService:
    def __init__(self, ctx: RegistryContext) -> None:
        self.ctx = ctx

    # -- catalogs -------------------------------------------------------------------

    async def create_catalog(self, principal: str, name: str, comment: str = "") -> Catalog:
        check_part(name, "catalog")
        if not self.ctx.policy.is_superuser(principal):
            raise PermissionDenied(f"permission denied: only superusers create catalogs ({principal} is not one)")
        async with self.ctx.unit() as unit:
            catalog = await securables.insert_catalog(unit.conn, name, comment, principal)
        if catalog is None:
            raise AlreadyExists(f"catalog {name!r} already exists")
        return catalog

    async def get_catalog(self, principal: str, name: str) -> Catalog:
        check_part(name, "catalog")
        async with self.ctx.read() as conn:
            chain = await securables.catalog_chain(conn, name, principal)
            self.ctx.require(principal, chain, Privilege.USE_CATALOG, f"catalog {name!r}")
            return await securables.get_catalog(conn, name)

    async def list_catalogs(self, principal: str, page_size_: int = 0, token: str = "") -> Page:
        offset, size = page_window(token, page_size_)
        async with self.ctx.read() as conn:
            catalogs = await securables.list_catalogs(conn)
            grants = await securables.principal_grants(conn, principal)
        visible = [
            c
            for c in catalogs
            if self.ctx.policy.is_superuser(principal)
            or (
                not self.ctx.policy.is_service_principal(principal)
                and (c.owner == principal or grants.get(("CATALOG", c.name), frozenset()) & {"USE_CATALOG", "MANAGE"})
            )
        ]
        chunk = visible[offset : offset + size + 1]
        return Page(chunk[:size], next_offset_token(offset, size, len(chunk)))

    async def delete_catalog(self, principal: str, name: str, cascade: bool = False) -> None:
        check_part(name, "catalog")
        async with self.ctx.unit() as unit:
            chain = await securables.catalog_chain(unit.conn, name, principal)
            self.ctx.require(principal, chain, Privilege.MANAGE, f"catalog {name!r}")
            if not cascade and await securables.count_children(unit.conn, name):
                raise FailedPrecondition(f"catalog {name!r} is not empty; delete its schemas or pass cascade")
            await securables.delete_catalog(unit.conn, name)

    # -- schemas --------------------------------------------------------------------

    async def create_schema(self, principal: str, catalog: str, name: str, comment: str = "") -> Schema:
        check_part(catalog, "catalog")
        check_part(name, "schema")
        async with self.ctx.unit() as unit:
            chain = await securables.catalog_chain(unit.conn, catalog, principal)
            self.ctx.require(principal, chain, Privilege.CREATE_SCHEMA, f"catalog {catalog!r}")
            schema = await securables.insert_schema(unit.conn, catalog, name, comment, principal)
        if schema is None:
            raise AlreadyExists(f"schema {catalog}.{name} already exists")
        return schema

    async def get_schema(self, principal: str, full_name: str) -> Schema:
        name = SchemaName.parse(full_name)
        async with self.ctx.read() as conn:
            chain = await securables.schema_chain(conn, name.catalog, name.schema, principal)
            self.ctx.require(principal, chain, Privilege.USE_SCHEMA, f"schema {full_name!r}")
            return await securables.get_schema(conn, name.catalog, name.schema)

    async def list_schemas(self, principal: str, catalog: str, page_size_: int = 0, token: str = "") -> Page:
        check_part(catalog, "catalog")
        offset, size = page_window(token, page_size_)
        async with self.ctx.read() as conn:
            chain = await securables.catalog_chain(conn, catalog, principal)
            self.ctx.require(principal, chain, Privilege.USE_CATALOG, f"catalog {catalog!r}")
            schemas = await securables.list_schemas(conn, catalog)
            visible = []
            for schema in schemas:
                schema_chain = await securables.schema_chain(conn, catalog, schema.name, principal)
                if schema_chain and self.ctx.can(principal, schema_chain, Privilege.USE_SCHEMA):
                    visible.append(schema)
        chunk = visible[offset : offset + size + 1]
        return Page(chunk[:size], next_offset_token(offset, size, len(chunk)))

    async def delete_schema(self, principal: str, full_name: str, cascade: bool = False) -> None:
        name = SchemaName.parse(full_name)
        async with self.ctx.unit() as unit:
            chain = await securables.schema_chain(unit.conn, name.catalog, name.schema, principal)
            self.ctx.require(principal, chain, Privilege.MANAGE, f"schema {full_name!r}")
            if not cascade and await securables.count_children(unit.conn, name.catalog, name.schema):
                raise FailedPrecondition(
                    f"schema {full_name!r} is not empty; delete its models and experiments or pass cascade"
                )
            await securables.delete_schema(unit.conn, name.catalog, name.schema)

    # -- grants ---------------------------------------------------------------------

    async def resolve(self, conn, kind: SecurableType, full_name: str, principal: str) -> tuple[Chain, dict]:
        """The chain of any securable, and its key for owner updates; NOT_FOUND if it does not exist."""
        if kind == SecurableType.CATALOG:
            check_part(full_name, "catalog")
            chain, key = await securables.catalog_chain(conn, full_name, principal), {"a": full_name}
        elif kind == SecurableType.SCHEMA:
            name = SchemaName.parse(full_name)
            chain = await securables.schema_chain(conn, name.catalog, name.schema, principal)
            key = {"a": name.catalog, "b": name.schema}
        elif kind == SecurableType.REGISTERED_MODEL:
            name = ModelName.parse(full_name)
            found = await model_store.model_with_chain(conn, name, principal)
            chain, key = (found[2] if found else None), {"a": name.catalog, "b": name.schema, "c": name.name}
        elif kind == SecurableType.EXPERIMENT:
            if not full_name.isdigit():
                raise InvalidArgument(f"invalid experiment id {full_name!r}", field="securable_full_name")
            found = await tracking.experiment_with_chain(conn, principal, experiment_id=int(full_name))
            chain, key = (found[1] if found else None), {"a": full_name}
        elif kind in SCHEMA_LEVEL_TYPES:
            name = ModelName.parse(full_name)
            chain = await securables.dataset_chain(conn, name.catalog, name.schema, name.name, principal)
            key = {"a": name.full}
        elif kind in TOP_LEVEL_TYPES:
            check_top_level_name(kind, full_name)
            chain, key = await securables.top_level_chain(conn, kind, full_name, principal), {"a": full_name}
        else:
            raise InvalidArgument(f"unknown securable type {kind!r}", field="securable_type")
        if chain is None:
            raise NotFound(f"{kind.lower()} {full_name!r} does not exist")
        return chain, key

    def _privileges(self, kind: SecurableType, privileges: list[str]) -> list[str]:
        if not privileges:
            raise InvalidArgument("no privileges given", field="privileges")
        out = []
        for p in privileges:
            try:
                privilege = Privilege(p)
            except ValueError:
                raise InvalidArgument(f"unknown privilege {p!r}", field="privileges") from None
            if privilege not in _GRANTABLE[kind]:
                raise InvalidArgument(f"{privilege} cannot be granted on a {kind.lower()}", field="privileges")
            out.append(privilege.value)
        return sorted(set(out))

    async def update_grants(
        self, principal: str, kind: SecurableType, full_name: str, grantee: str, privileges: list[str], grant: bool
    ) -> list[str]:
        """Grant or revoke; returns the grantee's privileges on the securable afterwards."""
        if not grantee:
            raise InvalidArgument("principal is required", field="principal")
        wanted = self._privileges(kind, privileges)
        async with self.ctx.unit() as unit:
            chain, _ = await self.resolve(unit.conn, kind, full_name, principal)
            self.ctx.require(principal, chain, Privilege.MANAGE, f"{kind.lower()} {full_name!r}")
            if grant:
                changed = await securables.add_grants(unit.conn, kind.value, full_name, grantee, wanted, principal)
            else:
                changed = await securables.remove_grants(unit.conn, kind.value, full_name, grantee, wanted)
            if changed:
                added, removed = (sorted(changed), []) if grant else ([], sorted(changed))
                unit.emit(events.grant_event(principal, kind.value, full_name, grantee, added, removed))
            current = await securables.list_grants(unit.conn, kind.value, full_name, grantee)
        return current.get(grantee, [])

    async def list_grants(
        self, principal: str, kind: SecurableType, full_name: str, grantee: str = ""
    ) -> tuple[dict, str]:
        async with self.ctx.read() as conn:
            chain, _ = await self.resolve(conn, kind, full_name, principal)
            # Anyone who can reach the securable may see its grants, as in Unity Catalog.
            if not (self.ctx.policy.sees(principal, chain) or grantee == principal):
                self.ctx.require(principal, chain, Privilege.MANAGE, f"{kind.lower()} {full_name!r}")
            return await securables.list_grants(conn, kind.value, full_name, grantee), chain.target.owner

    async def set_owner(self, principal: str, kind: SecurableType, full_name: str, new_owner: str) -> str:
        if not new_owner:
            raise InvalidArgument("new_owner is required", field="new_owner")
        async with self.ctx.unit() as unit:
            chain, key = await self.resolve(unit.conn, kind, full_name, principal)
            if not (self.ctx.policy.is_superuser(principal) or chain.target.owner == principal):
                raise PermissionDenied(
                    f"permission denied: only the owner of {kind.lower()} {full_name} or a superuser may transfer it"
                )
            await securables.set_owner(unit.conn, kind, key, new_owner)
            unit.emit(events.owner_event(principal, kind.value, full_name, new_owner))
        return new_owner

    async def check_privilege(
        self, caller: str, subject: str, kind: SecurableType, full_name: str, privilege: str
    ) -> Decision:
        subject = subject or caller
        if subject != caller and not self.ctx.policy.may_ask_for_others(caller):
            raise PermissionDenied(
                f"permission denied: {caller} may not check privileges of other principals"
                " (only service principals and superusers may)"
            )
        try:
            wanted = Privilege(privilege)
        except ValueError:
            raise InvalidArgument(f"unknown privilege {privilege!r}", field="privilege") from None
        async with self.ctx.read() as conn:
            chain, _ = await self.resolve(conn, kind, full_name, subject)
        return self.ctx.policy.decide(subject, chain, wanted)

    # -- securables other services own (endpoints, monitors) ---------------------------

    def _require_service(self, caller: str, kind: SecurableType, name: str) -> None:
        if not self.ctx.policy.may_register_securables(caller):
            raise PermissionDenied(
                f"permission denied: only service principals and superusers register securables ({caller} is neither)"
            )
        if kind not in REGISTERED_TYPES:
            raise InvalidArgument(
                f"only endpoints, monitors and datasets are registered this way, not a {kind.lower()}",
                field="securable_type",
            )
        if kind in SCHEMA_LEVEL_TYPES:
            ModelName.parse(name)
        else:
            check_top_level_name(kind, name)

    async def register_securable(self, caller: str, kind: SecurableType, name: str, owner: str) -> TopLevelSecurable:
        """Create an endpoint, monitor or dataset owned by `owner` (the principal who created it in its service)."""
        self._require_service(caller, kind, name)
        if not owner:
            raise InvalidArgument("owner is required", field="owner")
        async with self.ctx.unit() as unit:
            if kind in SCHEMA_LEVEL_TYPES:
                parsed = ModelName.parse(name)
                if await securables.schema_chain(unit.conn, parsed.catalog, parsed.schema, owner) is None:
                    raise NotFound(f"schema {parsed.catalog}.{parsed.schema} does not exist")
            created = await securables.insert_top_level(unit.conn, kind.value, name, owner)
            if created is None:
                raise AlreadyExists(f"{kind.lower()} {name!r} already exists")
            unit.emit(events.securable_event(Type.SECURABLE_REGISTERED, owner, kind.value, name, owner))
        return created

    async def touch_securable(self, caller: str, kind: SecurableType, name: str, actor: str) -> TopLevelSecurable:
        """Announce a change of the object's definition (SECURABLE_CHANGED) to every replica of its service."""
        self._require_service(caller, kind, name)
        async with self.ctx.unit() as unit:
            touched = await securables.touch_top_level(unit.conn, kind.value, name)
            if touched is None:
                raise NotFound(f"{kind.lower()} {name!r} does not exist")
            unit.emit(events.securable_event(Type.SECURABLE_CHANGED, actor or caller, kind.value, name))
        return touched

    async def unregister_securable(self, caller: str, kind: SecurableType, name: str, actor: str) -> None:
        """Remove the securable and every grant on it."""
        self._require_service(caller, kind, name)
        async with self.ctx.unit() as unit:
            if not await securables.delete_top_level(unit.conn, kind.value, name):
                raise NotFound(f"{kind.lower()} {name!r} does not exist")
            unit.emit(events.securable_event(Type.SECURABLE_UNREGISTERED, actor or caller, kind.value, name))
