"""Serving core pieces that need no infrastructure: endpoint specs, routing, admission, payload records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidArgument, ResourceExhausted, Unavailable
from services.serving.deployment import Deployment
from services.serving.entities import (
    READY,
    EndpointSpec,
    GenerateCall,
    SamplingSpec,
    ServedModelSpec,
    StoredEndpoint,
    TensorCall,
)
from services.serving.model_pool import LoadedModel
from services.serving.payload_log import PayloadRecord

pytestmark = pytest.mark.unit


def _spec(*models: ServedModelSpec, name: str = "ep") -> EndpointSpec:
    return EndpointSpec(name, models)


def test_a_single_model_without_a_share_gets_all_the_traffic() -> None:
    spec = _spec(ServedModelSpec("c.s.m", version=1, traffic_percent=0)).validated()
    assert spec.served_models[0].traffic_percent == 100


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (_spec(ServedModelSpec("c.s.m", version=1, alias="a")), "either a version"),
        (_spec(ServedModelSpec("c.s.m")), "either a version"),
        (
            _spec(
                ServedModelSpec("c.s.m", version=1, traffic_percent=60),
                ServedModelSpec("c.s.n", version=1, traffic_percent=30),
            ),
            "add up to 100",
        ),
        (_spec(ServedModelSpec("c.s.m", version=1), name="bad name!"), "endpoint names"),
        (_spec(), "at least one"),
        (
            _spec(
                ServedModelSpec("c.s.m", version=1, traffic_percent=50),
                ServedModelSpec("c.s.m", version=1, traffic_percent=50),
            ),
            "twice",
        ),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(spec: EndpointSpec, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        spec.validated()


class _Runtime:
    kind = "tensor"


def _deployment(*shares: int, limit: int = 4) -> Deployment:
    models = tuple(ServedModelSpec(f"c.s.m{i}", version=1, traffic_percent=p) for i, p in enumerate(shares))
    now = datetime.now(UTC)
    deployment = Deployment(StoredEndpoint(EndpointSpec("ep", models, limit), "alice", now, now), 64)
    return deployment


def test_routing_follows_traffic_shares_among_ready_routes() -> None:
    deployment = _deployment(90, 10)
    for index, route in enumerate(deployment.routes):
        route.model, route.state = LoadedModel(f"c.s.m{index}", 1, _Runtime()), READY
    picks = [deployment.pick().spec.model_name for _ in range(2000)]
    share = picks.count("c.s.m0") / len(picks)
    assert 0.8 < share < 0.97


def test_a_route_still_loading_gives_its_share_to_the_others_and_none_ready_is_unavailable() -> None:
    deployment = _deployment(50, 50)
    with pytest.raises(Unavailable):
        deployment.pick()
    deployment.routes[1].model, deployment.routes[1].state = LoadedModel("c.s.m1", 1, _Runtime()), READY
    assert {deployment.pick().spec.model_name for _ in range(50)} == {"c.s.m1"}


async def test_admission_fails_at_once_over_the_limit_unless_told_to_wait() -> None:
    deployment = _deployment(100, limit=1)
    async with deployment.admit(wait=False):
        with pytest.raises(ResourceExhausted, match="concurrency limit"):
            async with deployment.admit(wait=False):
                pass
        waiter = asyncio.create_task(_admit_waiting(deployment))
        await asyncio.sleep(0.01)
        assert not waiter.done()
    await asyncio.wait_for(waiter, 5)


async def _admit_waiting(deployment: Deployment) -> None:
    async with deployment.admit(wait=True):
        pass


async def test_a_lease_keeps_a_model_busy_until_released() -> None:
    model = LoadedModel("c.s.m", 1, _Runtime())
    with model.lease():
        assert not await model.wait_idle(0.01)
    assert await model.wait_idle(0.01)


def test_a_payload_record_carries_every_field() -> None:
    record = PayloadRecord(
        request_id="r1",
        endpoint="ep",
        source="grpc",
        status="OK",
        timestamp=datetime(2026, 1, 2, tzinfo=UTC),
        inputs={"prompt": "hi"},
        outputs={"text": "yo"},
        served_model="c.s.m",
        model_version=3,
        latency_ms=12.5,
        time_to_first_token_ms=2.0,
        prompt_tokens=4,
        completion_tokens=5,
        trace_id="ab",
        principal="alice",
        finish_reason="length",
        labels={"tenant": "t"},
    )
    message = record.to_proto()
    assert (message.model_version, message.principal, message.finish_reason) == ("3", "alice", "length")
    assert message.inputs["prompt"] == "hi" and message.outputs["text"] == "yo"
    assert message.timestamp.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 2, tzinfo=UTC)


# -- bounds on client-chosen values ------------------------------------------------


@pytest.mark.parametrize("name", ["trailing\n", "x" * 129, "", "-lead", "sp ace", "tab\t"])
def test_endpoint_names_out_of_bounds_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="endpoint names"):
        _spec(ServedModelSpec("c.s.m", version=1), name=name).validated()


def test_served_model_names_and_aliases_are_bounded() -> None:
    with pytest.raises(InvalidArgument, match="served model names"):
        _spec(ServedModelSpec("m" * 256, version=1)).validated()
    with pytest.raises(InvalidArgument, match="aliases"):
        _spec(ServedModelSpec("c.s.m", alias="a\n")).validated()
    with pytest.raises(InvalidArgument, match="at most"):
        _spec(*(ServedModelSpec(f"c.s.m{i}", version=1, traffic_percent=5) for i in range(20))).validated()


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (GenerateCall("ep", "r" * 129, "grpc", prompt="hi"), "request ids"),
        (GenerateCall("ep", "bad id", "grpc", prompt="hi"), "request ids"),
        (GenerateCall("ep", "r\x00", "grpc", prompt="hi"), "request ids"),
        (GenerateCall("ep\n", "r", "grpc", prompt="hi"), "endpoint names"),
        (GenerateCall("ep", "r", "grpc", prompt="hi", labels={f"k{i}": "v" for i in range(17)}), "labels"),
        (GenerateCall("ep", "r", "grpc", prompt="hi", labels={"k": "v" * 257}), "label"),
        (GenerateCall("ep", "r", "grpc", prompt="hi", labels={"bad key": "v"}), "label keys"),
        (GenerateCall("ep", "r", "grpc", prompt="hi", parameters={f"p{i}": 1 for i in range(33)}), "parameters"),
        (GenerateCall("ep", "r", "grpc", prompt="hi", parameters={"p": "x" * 1025}), "parameter"),
        (GenerateCall("ep", "r", "grpc", prompt="hi", sampling=SamplingSpec(stop=("s",) * 17)), "stop strings"),
        (GenerateCall("ep", "r", "grpc", prompt="hi", sampling=SamplingSpec(top_p=2.0)), "top_p"),
        (GenerateCall("ep", "r", "grpc", prompt="hi", sampling=SamplingSpec(temperature=float("nan"))), "temperature"),
        (GenerateCall("ep", "r", "grpc", messages=[{"role": "r" * 40, "content": "x"}]), "roles"),
        (GenerateCall("ep", "r", "grpc"), "prompt or chat"),
        (TensorCall("ep", "r" * 12_000, "oip", {}), "request ids"),
    ],
)
def test_calls_out_of_bounds_are_invalid_argument(call, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        call.check()


def test_calls_at_the_bounds_are_accepted() -> None:
    GenerateCall(
        "e" * 128,
        "r" * 128,
        "grpc",
        prompt="hi",
        labels={f"k{i}": "v" * 256 for i in range(16)},
        parameters={f"p{i}": "x" * 1024 for i in range(32)},
        sampling=SamplingSpec(temperature=0.0, top_p=1.0, stop=("s" * 256,) * 16, seed=0),
    ).check()


def test_a_deployment_leases_the_model_it_picks_and_an_unloaded_one_is_unavailable() -> None:
    deployment = _deployment(100)
    model = LoadedModel("c.s.m0", 1, _Runtime())
    deployment.routes[0].model, deployment.routes[0].state = model, READY
    with deployment.lease() as leased:
        assert leased is model and model.in_flight == 1
    model.unloaded = True
    with pytest.raises(Unavailable, match="unloaded"), deployment.lease():
        pass
