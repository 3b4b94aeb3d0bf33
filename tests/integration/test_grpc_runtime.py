"""The shared gRPC server on a sample service: health, reflection, auth and error mapping."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tessera.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc

from services.common import config
from services.common.auth import bearer, current_principal
from services.common.errors import NotFound
from services.common.grpc_server import TesseraServer
from services.common.lifecycle import Readiness

pytestmark = pytest.mark.integration

SERVICE = "tessera.evaluation.v1.EvaluationService"


class SampleServicer(evaluation_pb2_grpc.EvaluationServiceServicer):
    """Echoes the caller's principal; unknown ids are NOT_FOUND; 'boom' is a bug."""

    async def GetEvalRun(self, request, context):
        if request.eval_run_id == "missing":
            raise NotFound(f"eval run {request.eval_run_id!r} does not exist")
        if request.eval_run_id == "boom":
            raise RuntimeError("secret internal detail")
        return evaluation_pb2.EvalRun(eval_run_id=request.eval_run_id, created_by=current_principal().name)


@pytest.fixture
async def channel():
    settings = config.load(config.CommonSettings, service_name="sample", grpc_port=0, auth_tokens="good-token=alice")
    server = TesseraServer(settings)
    server.add(evaluation_pb2_grpc.add_EvaluationServiceServicer_to_server, SampleServicer(), SERVICE)
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(0)


async def test_health_and_reflection_answer_without_a_token(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    listed = [s.name async for r in responses for s in r.list_services_response.service]
    assert SERVICE in listed and "grpc.health.v1.Health" in listed


@pytest.mark.parametrize("metadata", [(), bearer("wrong-token"), (("authorization", "good-token"),)])
async def test_a_call_without_a_valid_token_is_unauthenticated(channel, metadata):
    stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetEvalRun(evaluation_pb2.GetEvalRunRequest(eval_run_id="x"), metadata=metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_handler_sees_the_callers_principal(channel):
    stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
    reply = await stub.GetEvalRun(evaluation_pb2.GetEvalRunRequest(eval_run_id="r1"), metadata=bearer("good-token"))
    assert reply.created_by == "alice"


async def test_core_errors_map_to_status_codes_and_bugs_leak_nothing(channel):
    stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetEvalRun(evaluation_pb2.GetEvalRunRequest(eval_run_id="missing"), metadata=bearer("good-token"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "missing" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetEvalRun(evaluation_pb2.GetEvalRunRequest(eval_run_id="boom"), metadata=bearer("good-token"))
    assert err.value.code() == grpc.StatusCode.INTERNAL and "secret" not in err.value.details()
    # ...and the server keeps serving.
    reply = await stub.GetEvalRun(evaluation_pb2.GetEvalRunRequest(eval_run_id="ok"), metadata=bearer("good-token"))
    assert reply.eval_run_id == "ok"


async def test_health_is_not_serving_while_a_background_worker_is_down():
    readiness = Readiness()
    settings = config.load(config.CommonSettings, service_name="sample", grpc_port=0, auth_tokens="good-token=alice")
    server = TesseraServer(settings, readiness=readiness)
    server.add(evaluation_pb2_grpc.add_EvaluationServiceServicer_to_server, SampleServicer(), SERVICE)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            health = health_pb2_grpc.HealthStub(chan)

            async def statuses() -> set[int]:
                return {
                    (await health.Check(health_pb2.HealthCheckRequest(service=name))).status for name in ("", SERVICE)
                }

            readiness.mark_down("consumer-a")
            readiness.mark_down("consumer-b")
            await asyncio.sleep(0)  # health is updated by a task on the server's loop
            assert await statuses() == {health_pb2.HealthCheckResponse.NOT_SERVING}
            readiness.mark_up("consumer-a")
            await asyncio.sleep(0)
            assert await statuses() == {health_pb2.HealthCheckResponse.NOT_SERVING}
            readiness.mark_up("consumer-b")
            await asyncio.sleep(0)
            assert await statuses() == {health_pb2.HealthCheckResponse.SERVING}
    finally:
        await server.stop(0)
