"""Lineage: edges between datasets, tables, runs, model versions, endpoints and indexes, and walks over them.

Who sees what: a node that names something the registry guards (a run, an
experiment, a registered model or one of its versions, a registered endpoint or
monitor) is shown only to callers who may read it (EXECUTE; for endpoints any of
EXECUTE/MANAGE/SELECT, for monitors SELECT/MANAGE). A node the caller may not see
is left out, with every edge that touches it, and the walk does not pass
through it: nothing reached only through a hidden node is returned, so a walk
reveals neither another tenant's objects nor where they lead. Nodes of types the
registry does not guard (TABLE, DATASET, VECTOR_INDEX...) and endpoints no
service registered are plain names, visible to anyone who reaches them.

Walks are breadth-first with a visited set (cycles are followed once), at most
`registry_lineage_max_depth` levels and `registry_lineage_max_nodes` nodes; past
the node cap the walk stops and returns what it found.
"""

from __future__ import annotations

import re

from psycopg import AsyncConnection

from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.registry.access import Chain, Privilege, SecurableType
from services.registry.context import RegistryContext
from services.registry.entities import LineageEdge, LineageNode
from services.registry.names import ModelName
from services.registry.store import lineage as store
from services.registry.store import models as model_store
from services.registry.store import securables, tracking

_TYPE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
MAX_NAME = 512

# Node types that name a securable other services register here.
_TOP_LEVEL_NODES = {
    "SERVING_ENDPOINT": SecurableType.ENDPOINT,
    "ENDPOINT": SecurableType.ENDPOINT,
    "MONITOR": SecurableType.MONITOR,
}
_SEES = {
    SecurableType.ENDPOINT: (Privilege.EXECUTE, Privilege.MANAGE, Privilege.SELECT),
    SecurableType.MONITOR: (Privilege.SELECT, Privilege.MANAGE),
}


def _check_shape(node: LineageNode) -> None:
    if not _TYPE.fullmatch(node.type or ""):
        raise InvalidArgument(f"invalid lineage node type {node.type[:64]!r}: upper case, e.g. TABLE", field="type")
    if not node.name or len(node.name) > MAX_NAME:
        raise InvalidArgument(f"lineage node name must be 1 to {MAX_NAME} characters", field="name")


class LineageService:
    def __init__(self, ctx: RegistryContext) -> None:
        self.ctx = ctx

    async def _chain(self, conn: AsyncConnection, principal: str, node: LineageNode) -> tuple[bool, Chain | None]:
        """(guarded, chain): whether the registry guards this node type, and its chain (None: it does not exist)."""
        if node.type == "RUN":
            found = await tracking.run_with_chain(conn, node.name, principal)
            return True, found[1] if found else None
        if node.type == "EXPERIMENT":
            if not node.name.isdigit():
                return True, None
            found = await tracking.experiment_with_chain(conn, principal, experiment_id=int(node.name))
            return True, found[1] if found else None
        if node.type in ("MODEL_VERSION", "REGISTERED_MODEL"):
            model, sep, version = node.name.rpartition("/") if node.type == "MODEL_VERSION" else (node.name, "/", "")
            if node.type == "MODEL_VERSION" and (not sep or not version.isdigit()):
                return True, None
            try:
                name = ModelName.parse(model)
            except InvalidArgument:
                return True, None
            found = await model_store.model_with_chain(conn, name, principal)
            if found is None:
                return True, None
            if version and await model_store.get_version(conn, found[0], model, int(version)) is None:
                return True, None
            return True, found[2]
        if node.type in _TOP_LEVEL_NODES:
            # An endpoint no service registered is only a name.
            chain = await securables.top_level_chain(conn, _TOP_LEVEL_NODES[node.type], node.name, principal)
            return chain is not None, chain
        return False, None

    def _sees(self, principal: str, chain: Chain) -> bool:
        kind = chain.target.type
        return any(self.ctx.can(principal, chain, p) for p in _SEES.get(kind, (Privilege.EXECUTE,)))

    async def _visible(self, conn: AsyncConnection, principal: str, node: LineageNode) -> bool:
        guarded, chain = await self._chain(conn, principal, node)
        if not guarded:
            return True
        return chain is not None and self._sees(principal, chain)

    async def _check_node(self, conn: AsyncConnection, principal: str, node: LineageNode) -> None:
        """A guarded node must exist and be readable by the caller (service principals: exist)."""
        _check_shape(node)
        guarded, chain = await self._chain(conn, principal, node)
        if not guarded:
            return
        if chain is None:
            if node.type == "MODEL_VERSION" and not re.fullmatch(r".+/\d+", node.name):
                raise InvalidArgument(
                    f"MODEL_VERSION node {node.name!r}: expected 'catalog.schema.model/<version>'", field="name"
                )
            raise NotFound(f"{node.type.lower()} {node.name!r} does not exist")
        if self.ctx.policy.may_link_lineage(principal) or self._sees(principal, chain):
            return
        raise PermissionDenied(f"permission denied: {principal} may not read {node.type.lower()} {node.name}")

    async def add_edge(
        self, principal: str, source: LineageNode, target: LineageNode, properties: dict | None = None
    ) -> LineageEdge:
        if source == target:
            raise InvalidArgument("a lineage edge needs two different nodes", field="target")
        async with self.ctx.unit() as unit:
            await self._check_node(unit.conn, principal, source)
            await self._check_node(unit.conn, principal, target)
            return await store.add_edge(unit.conn, source, target, properties or {}, principal)

    async def delete_edge(self, principal: str, source: LineageNode, target: LineageNode) -> None:
        async with self.ctx.unit() as unit:
            for node in (source, target):
                _check_shape(node)
                if not await self._visible(unit.conn, principal, node):
                    raise PermissionDenied(
                        f"permission denied: {principal} may not read {node.type.lower()} {node.name}"
                    )
            if not await store.delete_edge(unit.conn, source, target):
                raise NotFound("no such lineage edge")

    async def lineage(
        self, principal: str, node: LineageNode, direction: str = "BOTH", max_depth: int = 0
    ) -> tuple[list[LineageNode], list[LineageEdge]]:
        """(nodes, edges) reachable from node through nodes the caller may see; see the module docstring."""
        s = self.ctx.settings
        if max_depth < 0 or max_depth > s.registry_lineage_max_depth:
            raise InvalidArgument(
                f"max_depth must be 0 (the default, {s.registry_lineage_max_depth}) to {s.registry_lineage_max_depth}",
                field="max_depth",
            )
        depth = max_depth or s.registry_lineage_max_depth
        if direction not in ("BOTH", "UPSTREAM", "DOWNSTREAM"):
            raise InvalidArgument(f"unknown lineage direction {direction!r}", field="direction")
        _check_shape(node)
        nodes: dict[LineageNode, None] = {node: None}
        edges: dict[tuple[LineageNode, LineageNode], LineageEdge] = {}
        async with self.ctx.read() as conn:
            guarded, chain = await self._chain(conn, principal, node)
            if guarded and chain is None:
                raise NotFound(f"{node.type.lower()} {node.name!r} does not exist")
            if guarded and not self._sees(principal, chain):
                raise PermissionDenied(f"permission denied: {principal} may not read {node.type.lower()} {node.name}")
            visible: dict[LineageNode, bool] = {node: True}
            for downstream in (False, True):
                if direction == ("DOWNSTREAM" if not downstream else "UPSTREAM"):
                    continue
                await self._walk(conn, principal, node, downstream, depth, nodes, edges, visible)
        return sorted(nodes, key=lambda n: (n.type, n.name)), list(edges.values())

    async def _walk(
        self,
        conn: AsyncConnection,
        principal: str,
        start: LineageNode,
        downstream: bool,
        depth: int,
        nodes: dict[LineageNode, None],
        edges: dict[tuple[LineageNode, LineageNode], LineageEdge],
        visible: dict[LineageNode, bool],
    ) -> None:
        s = self.ctx.settings
        frontier, seen = [start], {start}
        for _ in range(depth):
            room = s.registry_lineage_max_edges - len(edges)
            if not frontier or room <= 0:
                return
            reached: list[LineageNode] = []
            for edge in await store.edges_from(conn, frontier, downstream, room):
                far = edge.target if downstream else edge.source
                if far not in visible:
                    visible[far] = await self._visible(conn, principal, far)
                if not visible[far] or (far not in nodes and len(nodes) >= s.registry_lineage_max_nodes):
                    continue
                nodes[far] = None
                edges[(edge.source, edge.target)] = edge
                if far not in seen:
                    seen.add(far)
                    reached.append(far)
            frontier = reached
