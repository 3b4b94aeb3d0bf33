"""A run whose process dies is marked FAILED "interrupted" once its lease lapses, its finished rows kept."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import grpc
import pytest
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.evaluation.v1 import evaluation_pb2_grpc

from services.common.auth import bearer
from services.fixtures import capitals
from tests.integration.evaluation.stack import ALICE, REPO, ServiceProcess, Stack, free_port

pytestmark = pytest.mark.integration


async def test_a_killed_process_leaves_its_run_failed_interrupted_with_its_rows(stack: Stack, unique: str) -> None:
    # A second replica, as its own process on the same schema, with a short lease.
    settings = stack.evaluation.settings
    env = {f"TESSERA_{f.name.upper()}": str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    port = free_port()
    env |= {
        "TESSERA_GRPC_PORT": str(port),
        "TESSERA_METRICS_PORT": str(free_port()),
        "TESSERA_EVALUATION_LEASE_S": "4",
        "TESSERA_OTLP_ENDPOINT": "",
        "PYTHONPATH": f"{REPO}:{REPO / 'protos' / 'gen' / 'python'}",
    }
    replica = ServiceProcess("services.evaluation", {**os.environ, **env}, stack.work / f"replica-{unique}.log")
    dataset, version = await stack.dataset(f"interrupted_{unique}", capitals.evaluation_rows())
    spec = stack.spec(dataset, version, ["exact_match"], repeats=4, concurrency=1, max_tokens=32)
    replica.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        other = evaluation_pb2_grpc.EvaluationServiceStub(channel)
        async with asyncio.timeout(300):
            while True:
                try:
                    run = await other.StartEvalRun(pb.StartEvalRunRequest(spec=spec), metadata=bearer(ALICE))
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    await asyncio.sleep(1)
            while True:
                seen = await other.GetEvalRun(pb.GetEvalRunRequest(eval_run_id=run.eval_run_id), metadata=bearer(ALICE))
                if seen.completed >= 2:
                    break
                await asyncio.sleep(0.2)
    finally:
        replica.kill()
        await channel.close()

    ended = await stack.wait(run.eval_run_id, timeout=120)
    kept = await stack.results(run.eval_run_id)

    assert ended.state == pb.RUN_STATE_FAILED and ended.error_message.startswith("interrupted")
    assert len(kept) >= 2 and ended.completed == len(kept) < ended.total
