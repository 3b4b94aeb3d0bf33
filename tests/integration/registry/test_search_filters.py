"""Pathological search filters are refused quickly and cheaply; the registry keeps answering meanwhile."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tessera.registry.v1 import registry_pb2 as pb

from tests.integration.registry.conftest import as_

pytestmark = pytest.mark.integration

# Each would have taken the old tokenizer seconds to minutes on the event loop.
PATHOLOGICAL = [
    "metrics.x < " + "1" * 8000 + "a",
    "metrics.x < " + "1." * 4000 + "a",
    "params.p = '" + "\\'" * 4000,
    "params.p = 'x'" + " and params.p = 'x'" * 60,  # too many clauses
    "params.p = '" + "x" * 20000 + "'",  # too long
]


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_pathological_filters_are_invalid_argument_while_health_keeps_answering(registry, schema_of):
    s, md = registry.stub, as_("alice")
    exp = await s.CreateExperiment(
        pb.CreateExperimentRequest(name=f"filters-{schema_of}", schema_full_name=schema_of), metadata=as_("admin")
    )
    health = health_pb2_grpc.HealthStub(grpc.aio.insecure_channel(f"127.0.0.1:{registry.grpc_port}"))
    searches = [
        s.SearchRuns(pb.SearchRunsRequest(experiment_ids=[exp.experiment_id], filter=f), metadata=as_("admin"))
        for f in PATHOLOGICAL
    ] + [s.SearchExperiments(pb.SearchExperimentsRequest(filter=f), metadata=md) for f in PATHOLOGICAL]
    codes_and_health = await asyncio.gather(
        *[_code(c) for c in searches], health.Check(health_pb2.HealthCheckRequest(service=""))
    )
    *codes, answer = codes_and_health
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * len(searches)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    async with aiohttp.ClientSession(headers={"Authorization": "Bearer tok-admin"}) as http:
        for f in PATHOLOGICAL:
            async with http.post(
                f"{registry.http_url}/api/2.0/mlflow/runs/search",
                json={"experiment_ids": [exp.experiment_id], "filter": f},
            ) as reply:
                assert reply.status == 400
                assert (await reply.json())["error_code"] == "INVALID_PARAMETER_VALUE"


async def test_the_registry_pool_runs_with_a_statement_timeout(registry):
    async with registry.db.connection() as conn:
        cur = await conn.execute("SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'")
        timeout_ms = (await cur.fetchone())[0]
    assert timeout_ms == registry.settings.registry_statement_timeout_ms > 0
