"""The registry core: every capability behind one object, shared by the gRPC and MLflow REST front ends."""

from __future__ import annotations

import logging

from services.common.db import Database, migrate
from services.registry.access import AccessPolicy
from services.registry.artifact_service import ArtifactService
from services.registry.artifact_store import open_artifact_store
from services.registry.catalog_service import CatalogService
from services.registry.context import RegistryContext, now_ms
from services.registry.lineage_service import LineageService
from services.registry.logged_model_service import LoggedModels
from services.registry.model_service import ModelRegistry
from services.registry.settings import RegistrySettings
from services.registry.store import MIGRATIONS, securables, tracking
from services.registry.tracking_service import TrackingService

_log = logging.getLogger(__name__)


class Registry:
    def __init__(self, settings: RegistrySettings, db: Database, on_events_committed=None) -> None:
        policy = AccessPolicy(
            settings.registry_superusers, settings.registry_service_principals, enabled=settings.auth_mode != "none"
        )
        self.ctx = RegistryContext(settings, db, policy, open_artifact_store(settings), on_events_committed)
        self.catalogs = CatalogService(self.ctx)
        self.tracking = TrackingService(self.ctx)
        self.logged_models = LoggedModels(self.ctx, self.tracking)
        self.models = ModelRegistry(self.ctx, self._resolve_source)
        self.artifacts = ArtifactService(self.ctx, self.tracking, self.models, self.logged_models)
        self.lineage = LineageService(self.ctx)

    async def _resolve_source(self, principal: str, source: str, run_id: str):
        return await self.artifacts.resolve_source(principal, source, run_id)

    @property
    def settings(self) -> RegistrySettings:
        return self.ctx.settings

    async def prepare(self) -> None:
        """Apply migrations and create the default catalog and schema (owned by the first superuser)."""
        await migrate(self.ctx.db, MIGRATIONS)
        owner = next(iter(self.settings.registry_superusers), "admin")
        catalog, schema = self.settings.registry_default_catalog, self.settings.registry_default_schema
        async with self.ctx.unit() as unit:
            await securables.insert_catalog(unit.conn, catalog, "default catalog", owner)
            await securables.insert_schema(unit.conn, catalog, schema, "default schema", owner)
            # MLflow clients fall back to experiment "0" ("Default") when none is set.
            await tracking.insert_default_experiment(
                unit.conn, self.ctx.files.uri("0"), catalog, schema, owner, now_ms()
            )

    async def close(self) -> None:
        await self.models.wait_for_copies()
