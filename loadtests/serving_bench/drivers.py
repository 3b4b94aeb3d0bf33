"""The three request paths under test, each timed the same way: latency, time to first token, tokens."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass

import aiohttp
import grpc
from confluent_kafka import Consumer
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.serving.v1 import serving_pb2 as pb
from tessera.serving.v1 import serving_pb2_grpc

from services.common.auth import bearer
from services.common.kafka_producer import EventProducer


@dataclass
class Sample:
    latency_s: float
    ttft_s: float | None
    completion_tokens: int


class TesseraGrpc:
    """`GenerateStream` (streamed, so the time to first token is seen as a client sees it)."""

    def __init__(self, address: str, endpoint: str, token: str, max_tokens: int) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = serving_pb2_grpc.ServingServiceStub(self._channel)
        self._endpoint, self._md = endpoint, bearer(token)
        self._sampling = events_pb.SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)

    async def __call__(self, prompt: str) -> Sample:
        started, first, tokens = time.perf_counter(), None, 0
        request = pb.GenerateRequest(endpoint=self._endpoint, prompt=prompt, sampling=self._sampling)
        async for chunk in self._stub.GenerateStream(request, metadata=self._md):
            if first is None and chunk.completion_tokens:
                first = time.perf_counter() - started
            tokens = chunk.completion_tokens
        return Sample(time.perf_counter() - started, first, tokens)

    async def close(self) -> None:
        await self._channel.close()


class VllmOpenAI:
    """An OpenAI-compatible server (vLLM's own, or Tessera's), `/v1/completions` or
    `/v1/chat/completions` streamed (server-sent events), the same body for both."""

    def __init__(self, base_url: str, model: str, max_tokens: int, *, chat: bool = False, api_key: str = "") -> None:
        self._url = f"{base_url}/v1/chat/completions" if chat else f"{base_url}/v1/completions"
        self._model, self._max_tokens, self._chat = model, max_tokens, chat
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600), headers=headers)

    async def __call__(self, prompt: str) -> Sample:
        body = {
            "model": self._model,
            **({"messages": [{"role": "user", "content": prompt}]} if self._chat else {"prompt": prompt}),
            "max_tokens": self._max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started, first, tokens = time.perf_counter(), None, 0
        async with self._session.post(self._url, json=body) as response:
            response.raise_for_status()
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                event = json.loads(line[5:])
                if first is None and event.get("choices") and _text(event["choices"][0]):
                    first = time.perf_counter() - started
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
        return Sample(time.perf_counter() - started, first, tokens)

    async def close(self) -> None:
        await self._session.close()


class TesseraKafka:
    """Requests on the requests topic, answers read from a reply topic (no streaming: no TTFT)."""

    def __init__(
        self, bootstrap: str, requests_topic: str, reply_topic: str, endpoint: str, token: str, max_tokens: int
    ) -> None:
        self._producer = EventProducer(bootstrap, client_id="serving-bench")
        self._requests, self._reply, self._endpoint, self._token = requests_topic, reply_topic, endpoint, token
        self._sampling = events_pb.SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        self._waiting: dict[str, asyncio.Future] = {}
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "latest"}
        )
        self._assigned = threading.Event()
        self._consumer.subscribe([reply_topic], on_assign=lambda *_: self._assigned.set())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    async def ready(self) -> None:
        await asyncio.to_thread(self._assigned.wait, 30)

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.05)  # returns as soon as one answer is there
            if message is not None and not message.error():
                response = events_pb.InferenceResponse.FromString(message.value())
                self._loop.call_soon_threadsafe(self._resolve, response, time.perf_counter())
        self._consumer.close()

    def _resolve(self, response: events_pb.InferenceResponse, at: float) -> None:
        future = self._waiting.pop(response.request_id, None)
        if future is not None and not future.done():
            future.set_result((response, at))

    async def __call__(self, prompt: str) -> Sample:
        request_id = uuid.uuid4().hex
        future = self._waiting[request_id] = self._loop.create_future()
        started = time.perf_counter()
        self._producer.produce(
            self._requests,
            events_pb.InferenceRequest(
                request_id=request_id,
                endpoint=self._endpoint,
                reply_to=self._reply,
                prompt=prompt,
                sampling=self._sampling,
                auth_token=self._token,
            ),
            key=request_id,
        )
        response, at = await asyncio.wait_for(future, 600)
        if response.status != "OK":
            raise RuntimeError(f"{response.status}: {response.error_message}")
        return Sample(at - started, None, response.completion_tokens)

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 5)
        await asyncio.to_thread(self._producer.close)


def _text(choice: dict) -> str:
    return choice.get("text") or (choice.get("delta") or {}).get("content") or ""
