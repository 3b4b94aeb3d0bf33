"""Act two: serve the champion over gRPC and over Kafka, and (optionally) stream from the tiny Llama."""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
from confluent_kafka import Consumer, TopicPartition
from inference import grpc_service_pb2 as oip
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as spb

from services.common import topics
from services.common.kafka_producer import EventProducer
from services.demo.clients import Clients
from services.demo.console import StepSkipped, progress, say


def infer_request(endpoint: str, features: np.ndarray, request_id: str = "") -> oip.ModelInferRequest:
    rows = np.asarray(features, dtype=np.float32).reshape(-1, 4)
    request = oip.ModelInferRequest(model_name=endpoint, id=request_id or f"demo-{uuid.uuid4().hex[:10]}")
    request.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    return request


async def score(clients: Clients, endpoint: str, features) -> tuple[str, list[float]]:
    reply = await clients.oip.ModelInfer(infer_request(endpoint, features), metadata=clients.md, timeout=10)
    data = reply.raw_output_contents[0]
    return reply.model_version, list(struct.unpack(f"<{len(data) // 4}f", data))


async def ensure_endpoint(clients: Clients, name: str, served: spb.ServedModel, want_version: int) -> None:
    """Create the endpoint on the first run; on later runs it already follows the alias, so wait until it does."""
    try:
        await clients.serving.GetEndpoint(spb.GetEndpointRequest(name=name), metadata=clients.md)
        exists = True
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        exists = False
    if not exists:
        async with progress("serve", f"loading {served.model_name} into endpoint {name}"):
            await clients.serving.CreateEndpoint(
                spb.CreateEndpointRequest(name=name, served_models=[served], wait=True),
                metadata=clients.md,
                timeout=300,
            )
        say("serve", f"created endpoint {name!r} on {served.model_name} @{served.alias or served.version}")
        return
    say("serve", f"endpoint {name!r} exists from an earlier run; waiting until it serves v{want_version}")
    deadline = time.monotonic() + 120
    async with progress("serve", f"waiting for {name} to serve v{want_version}"):
        while True:
            endpoint = await clients.serving.GetEndpoint(spb.GetEndpointRequest(name=name), metadata=clients.md)
            if [(s.version, s.state) for s in endpoint.status] == [(want_version, "READY")]:
                return
            if time.monotonic() > deadline:
                raise StepSkipped(f"endpoint {name} still serves {[(s.version, s.state) for s in endpoint.status]}")
            await asyncio.sleep(0.5)


async def call_over_kafka(clients: Clients, endpoint: str, features: list[float]) -> events_pb.InferenceResponse:
    """One request on tessera.serving.requests; the reply is read from tessera.serving.responses."""
    settings = clients.settings
    request_id = f"demo-kafka-{uuid.uuid4().hex[:10]}"
    reply_topic = topics.SERVING_RESPONSES
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"demo-{request_id}", "enable.auto.commit": False}
    )
    try:
        # Read from the current end of every partition: only replies produced from now on.
        metadata = consumer.list_topics(reply_topic, timeout=10)
        starts = []
        for partition in metadata.topics[reply_topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(reply_topic, partition), timeout=10)
            starts.append(TopicPartition(reply_topic, partition, high))
        consumer.assign(starts)
        request = events_pb.InferenceRequest(
            request_id=request_id, endpoint=endpoint, reply_to=reply_topic, auth_token=settings.token
        )
        request.tensors.update({"features": [features]})
        request.created_at.GetCurrentTime()
        producer = EventProducer(settings.kafka_bootstrap, client_id="demo")
        delivered = await producer.send(topics.SERVING_REQUESTS, request, key=request_id)
        producer.close()
        say("kafka", f"sent request {request_id} to {delivered.topic}[{delivered.partition}]@{delivered.offset}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = await asyncio.to_thread(consumer.poll, 0.5)
            if message is None or message.error():
                continue
            response = events_pb.InferenceResponse.FromString(message.value())
            if response.request_id == request_id:
                return response
        raise StepSkipped(f"no reply to {request_id} on {reply_topic} within 30 s (is serving's Kafka consumer up?)")
    finally:
        consumer.close()


async def upload_model(clients: Clients, model_name: str, folder: Path) -> int:
    """A new READY version of `model_name` holding the files of `folder`, uploaded over gRPC."""
    md = clients.md
    try:
        await clients.registry.CreateRegisteredModel(
            rpb.CreateRegisteredModelRequest(full_name=model_name), metadata=md
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    version = await clients.registry.CreateModelVersion(
        rpb.CreateModelVersionRequest(model_name=model_name), metadata=md
    )
    ref = rpb.ModelVersionRef(model_name=model_name, version=version.version)

    async def chunks():
        yield rpb.UploadArtifactsRequest(target=rpb.ArtifactTarget(model_version=ref))
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            data, rel, step = path.read_bytes(), path.relative_to(folder).as_posix(), 1024 * 1024
            for offset in range(0, max(len(data), 1), step):
                chunk = rpb.ArtifactChunk(
                    path=rel, data=data[offset : offset + step], offset=offset, file_size=len(data)
                )
                yield rpb.UploadArtifactsRequest(chunk=chunk)

    await clients.registry.UploadArtifacts(chunks(), metadata=md)
    await clients.registry.FinalizeModelVersion(
        rpb.FinalizeModelVersionRequest(model_name=model_name, version=version.version), metadata=md
    )
    return version.version


async def tiny_llama(clients: Clients, schema: str) -> None:
    """Register the tiny Llama once (alias `demo`), serve it on `demo-llm`, stream a few tokens."""
    from services.fixtures.tiny_llama import build_tiny_llama

    model = f"{schema}.tiny_llama"
    try:
        found = await clients.registry.GetModelVersionByAlias(
            rpb.GetModelVersionByAliasRequest(model_name=model, alias="demo"), metadata=clients.md
        )
        version = found.version
        say("llm", f"{model} v{version} is registered from an earlier run (alias 'demo')")
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        async with progress("llm", "building the tiny Llama (tokenizer + weights)"):
            folder = await asyncio.to_thread(build_tiny_llama)
        version = await upload_model(clients, model, folder)
        await clients.registry.SetModelAlias(
            rpb.SetModelAliasRequest(model_name=model, alias="demo", version=version), metadata=clients.md
        )
        say(
            "llm",
            f"registered {model} v{version} ({sum(p.stat().st_size for p in folder.rglob('*') if p.is_file()) / 2**20:.1f} MiB), alias 'demo'",
        )
    await ensure_endpoint(clients, "demo-llm", spb.ServedModel(model_name=model, alias="demo"), version)
    prompt = "Return a sorted list."
    sampling = events_pb.SamplingParams(temperature=0.0, max_tokens=24)
    say("llm", f"GenerateStream on demo-llm, prompt {prompt!r}; tokens as they arrive:")
    print("[demo] llm        > ", end="", flush=True)
    last = None
    async for chunk in clients.serving.GenerateStream(
        spb.GenerateRequest(endpoint="demo-llm", prompt=prompt, sampling=sampling), metadata=clients.md, timeout=120
    ):
        print(chunk.text_delta.replace("\n", "\\n"), end="", flush=True)
        last = chunk
    print(flush=True)
    if last is not None:
        say(
            "llm",
            f"{last.completion_tokens} tokens from {last.served_model} v{last.model_version}, "
            f"finish reason {last.finish_reason!r}",
        )
    await openai_sdk_call(clients)


async def openai_sdk_call(clients: Clients) -> None:
    """The same endpoint through the stock openai SDK: base_url and the bearer token are all it needs."""
    from openai import AsyncOpenAI

    sdk = AsyncOpenAI(base_url=clients.settings.serving_openai_url, api_key=clients.settings.token, max_retries=0)
    reply = await sdk.chat.completions.create(
        model="demo-llm", messages=[{"role": "user", "content": "Sort a list."}], temperature=0.0, max_tokens=24
    )
    say("llm", f"openai SDK, chat.completions on demo-llm: {reply.choices[0].message.content!r}")
    say(
        "llm",
        f"usage {reply.usage.prompt_tokens}+{reply.usage.completion_tokens} tokens; id {reply.id}"
        " is the request id in the inference table",
    )
