"""Lineage: edges between datasets, tables, runs, model versions, endpoints and indexes, and walks over them."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument, NotFound
from services.registry.context import RegistryContext
from services.registry.entities import LineageEdge, LineageNode
from services.registry.model_registry import ModelRegistry
from services.registry.store import lineage as store
from services.registry.tracking_service import TrackingService

_TYPE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class LineageService:
    def __init__(self, ctx: RegistryContext, runs: TrackingService, models: ModelRegistry) -> None:
        self.ctx = ctx
        self.runs = runs
        self.models = models

    async def _check_node(self, principal: str, node: LineageNode) -> None:
        """Nodes the registry owns must exist and be readable; others belong to their services."""
        if not _TYPE.fullmatch(node.type or ""):
            raise InvalidArgument(f"invalid lineage node type {node.type!r}: upper case, e.g. TABLE", field="type")
        if not node.name or len(node.name) > 512:
            raise InvalidArgument("lineage node name must be 1 to 512 characters", field="name")
        if node.type == "RUN":
            await self.runs.get_run(principal, node.name)
        elif node.type == "MODEL_VERSION":
            model, sep, version = node.name.rpartition("/")
            if not sep or not version.isdigit():
                raise InvalidArgument(
                    f"MODEL_VERSION node {node.name!r}: expected 'catalog.schema.model/<version>'", field="name"
                )
            await self.models.get_version(principal, model, int(version))
        elif node.type == "REGISTERED_MODEL":
            await self.models.get_model(principal, node.name)
        elif node.type == "EXPERIMENT":
            await self.runs.get_experiment(principal, experiment_id=node.name)

    async def add_edge(
        self, principal: str, source: LineageNode, target: LineageNode, properties: dict | None = None
    ) -> LineageEdge:
        await self._check_node(principal, source)
        await self._check_node(principal, target)
        if source == target:
            raise InvalidArgument("a lineage edge needs two different nodes", field="target")
        async with self.ctx.unit() as unit:
            return await store.add_edge(unit.conn, source, target, properties or {}, principal)

    async def delete_edge(self, principal: str, source: LineageNode, target: LineageNode) -> None:
        await self._check_node(principal, source)
        await self._check_node(principal, target)
        async with self.ctx.unit() as unit:
            if not await store.delete_edge(unit.conn, source, target):
                raise NotFound("no such lineage edge")

    async def lineage(self, principal: str, node: LineageNode, direction: str = "BOTH", max_depth: int = 0):
        """(nodes, edges) reachable from node; the start node must be readable by the caller."""
        if max_depth < 0:
            raise InvalidArgument("max_depth must not be negative", field="max_depth")
        await self._check_node(principal, node)
        edges: list[LineageEdge] = []
        async with self.ctx.read() as conn:
            if direction in ("BOTH", "UPSTREAM"):
                edges += await store.walk(conn, node, downstream=False, max_depth=max_depth)
            if direction in ("BOTH", "DOWNSTREAM"):
                edges += await store.walk(conn, node, downstream=True, max_depth=max_depth)
        nodes = {node}
        for edge in edges:
            nodes.update((edge.source, edge.target))
        return sorted(nodes, key=lambda n: (n.type, n.name)), edges
