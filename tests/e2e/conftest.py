"""The whole mesh in one process for the end-to-end tests: tests/integration/mesh_support.py's
`running_mesh`, with the deployment's principals (`admin` the superuser, `tessera-services` the
service principal the services call each other with) and three plain users, alice, bob and
carol, whose rights come from grants made in the tests.
"""

from __future__ import annotations

import pytest_asyncio

from tests.integration.mesh_support import TOKENS as MESH_TOKENS
from tests.integration.mesh_support import Mesh, running_mesh

__all__ = ["TOKENS", "Mesh", "mesh"]

USERS = {"alice": "e2e-alice", "bob": "e2e-bob", "carol": "e2e-carol"}
TOKENS = {**MESH_TOKENS, **USERS}


@pytest_asyncio.fixture(scope="module")
async def mesh(pg_dsn: str, kafka_bootstrap: str):
    async with running_mesh(pg_dsn, kafka_bootstrap, more_tokens=USERS) as started:
        yield started
