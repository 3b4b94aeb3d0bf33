"""Endpoint configuration lives in PostgreSQL: a new serving process deploys what is stored."""

from __future__ import annotations

import asyncio

import pytest

from services.common.auth import Principal
from services.serving.app import ServingApp
from tests.integration.serving.conftest import Mesh

pytestmark = pytest.mark.integration

ALICE = Principal("alice")


async def test_a_restarted_service_deploys_the_stored_endpoints(mesh: Mesh) -> None:
    # A second replica on the same schema; only the tensor endpoint is awaited (no second LLM request).
    settings = mesh.serving.settings
    replica = ServingApp(
        type(settings)(
            **{
                **settings.__dict__,
                "serving_run_request_consumer": False,
                "serving_run_registry_consumer": False,
            }
        ),
        serve_metrics=False,
    )
    await replica.start()
    try:
        deployment = replica.endpoints.deployment(mesh.tabular_endpoint)
        await asyncio.wait_for(deployment.loaded.wait(), 120)
        view = await replica.endpoints.get(mesh.tabular_endpoint, ALICE)
        assert view.state == "READY"
        assert view.stored.spec.served_models[0].alias == "champion"
        assert view.stored.created_by == "alice"
        listed = {v.stored.spec.name for v in (await replica.endpoints.list(ALICE, 1000, "")).items}
        assert {mesh.llm_endpoint, mesh.tabular_endpoint} <= listed
    finally:
        await replica.stop()
