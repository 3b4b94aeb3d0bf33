"""Production traffic becomes data: a dataset version from an endpoint's inference table (monitoring's API)."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from tessera.events.v1.payload_log_pb2 import PayloadLog
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.training.v1 import training_pb2 as pb

from services.common.auth import bearer
from services.common.kafka_producer import EventProducer
from tests.integration.training.stack import ADMIN, ALICE, SERVICE

pytestmark = pytest.mark.integration


def _log(endpoint: str, request_id: str, at: float, question: str, answer: str, status: str = "OK") -> PayloadLog:
    log = PayloadLog(request_id=request_id, endpoint=endpoint, served_model="m", model_version="1", status=status)
    log.inputs.update({"messages": [{"role": "user", "content": question}]})
    log.outputs.update({"text": answer})
    log.timestamp.FromNanoseconds(int(at * 1e9))
    return log


async def test_a_dataset_from_an_inference_table_holds_exactly_the_records_of_its_range(stack, unique) -> None:
    endpoint = f"chat-{unique}"
    await stack.registry.RegisterSecurable(
        rpb.RegisterSecurableRequest(
            securable_type=rpb.SECURABLE_TYPE_ENDPOINT, securable_full_name=endpoint, owner="alice"
        ),
        metadata=bearer(SERVICE),
    )
    start = (int(time.time()) // 60 - 100) * 60.0
    logs = [
        _log(endpoint, "before", start - 1, "too early?", "yes"),
        _log(endpoint, "a", start, "What is the capital of Zorvania?", "Quelmar"),
        _log(endpoint, "b", start + 30, "What is the capital of Ostrella?", "Vexmoor"),
        _log(endpoint, "failed", start + 40, "broken?", "", status="INVALID_ARGUMENT"),
        _log(endpoint, "c", start + 59.5, "What is the capital of Kandrith?", "Pellomere"),
        _log(endpoint, "after", start + 60, "too late?", "yes"),
    ]
    producer = EventProducer(stack.kafka_bootstrap, client_id=f"training-test-{unique}")
    for log in logs:
        await producer.send(stack.payload_topic, log, key=log.request_id)
    producer.close()
    # Wait until monitoring has ingested all six.
    channel = grpc.aio.insecure_channel(stack.monitoring_address)
    monitoring = monitoring_pb2_grpc.MonitoringServiceStub(channel)
    async with asyncio.timeout(60):
        while True:
            listed = await monitoring.ListInferenceRecords(
                mpb.ListInferenceRecordsRequest(endpoint=endpoint, page={"page_size": 100}), metadata=bearer(ALICE)
            )
            if len(listed.records) == len(logs):
                break
            await asyncio.sleep(0.5)
    await channel.close()
    dataset = await stack.create_dataset(f"traffic_{unique}")

    request = pb.CreateDatasetVersionFromInferenceTableRequest(
        dataset=dataset, endpoint=endpoint, status="OK", format=pb.ROW_FORMAT_CHAT
    )
    request.start_time.FromNanoseconds(int(start * 1e9))
    request.end_time.FromNanoseconds(int((start + 60) * 1e9))
    version = await stack.training.CreateDatasetVersionFromInferenceTable(request, metadata=bearer(ALICE))

    assert version.row_count == 3 and version.format == pb.ROW_FORMAT_CHAT
    assert version.source == f"inference_table:{endpoint}"
    read = b"".join(
        [
            c.data
            async for c in stack.training.ReadDatasetVersion(
                pb.ReadDatasetVersionRequest(dataset=dataset, version=version.version), metadata=bearer(ALICE)
            )
        ]
    )
    answers = {json.loads(line)["messages"][-1]["content"] for line in read.splitlines()}
    assert answers == {"Quelmar", "Vexmoor", "Pellomere"}
    lineage = await stack.registry.GetLineage(
        rpb.GetLineageRequest(
            node=rpb.LineageNode(type="DATASET", name=f"{dataset}@{version.version}"),
            direction=rpb.LINEAGE_DIRECTION_UPSTREAM,
        ),
        metadata=bearer(ADMIN),
    )
    assert any(e.source.type == "SERVING_ENDPOINT" and e.source.name == endpoint for e in lineage.edges)
    # An evaluation version of the same range: request and expected response.
    request.format = pb.ROW_FORMAT_EVALUATION
    evaluation = await stack.training.CreateDatasetVersionFromInferenceTable(request, metadata=bearer(ALICE))
    assert evaluation.format == pb.ROW_FORMAT_EVALUATION and evaluation.row_count == 3
    assert set(evaluation.columns) == {"request", "expected_response"}
