"""External models: an OpenAI-compatible server elsewhere, served like a local model.

An operator declares providers in `TESSERA_SERVING_EXTERNAL_PROVIDERS` (base URL,
where the API key is read from — an environment variable or a file, never
PostgreSQL — timeouts, retries, who may put the provider behind an endpoint).
An endpoint serves `external.<provider>.<model>` (version 1) like any model:
the same EXECUTE checks, limits, budgets, payload logs and usage, because the
core runs it through `ExternalRuntime` like an engine. Base URLs come only from
the operator's list, so an endpoint's creator cannot send the key elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from services.common.auth import Principal
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from services.serving.entities import LLM, ResolvedVersion, SamplingSpec, TensorSpec, TextChunk
from services.serving.runtimes.base import RuntimeStatistics

_log = logging.getLogger(__name__)

PREFIX = "external."
_PROVIDER = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
# Statuses worth another try: the provider is busy or failing, not refusing this request.
_RETRIED = {408, 409, 429, 500, 502, 503, 504}
_MAX_ERROR_TEXT = 512
_MAX_LINE_BYTES = 1 << 20  # one event of a provider's stream


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key_env: str = ""
    api_key_file: str = ""
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    max_retries: int = 2
    backoff_s: float = 0.2
    principals: tuple[str, ...] = ()  # who may serve it behind an endpoint; "*" everyone
    models: Mapping[str, str] | None = None  # served name -> the provider's model name

    def api_key(self) -> str:
        """Read when a model loads: a rotated key is picked up by reloading, and it never reaches storage."""
        if self.api_key_file:
            return Path(self.api_key_file).read_text().strip()
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise FailedPrecondition(f"provider {self.name!r}: ${self.api_key_env} is not set")
            return key
        return ""

    def remote_model(self, served: str) -> str:
        return (self.models or {}).get(served, served)


class ExternalProviders:
    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = dict(providers)

    @classmethod
    def parse(cls, text: str) -> ExternalProviders:
        """`{"name": {"base_url": ..., "api_key_env" | "api_key_file": ..., "principals": ["*"], ...}}`."""
        if not text.strip():
            return cls({})
        raw = json.loads(text)
        providers = {}
        for name, value in raw.items():
            if not _PROVIDER.match(name):
                raise ValueError(f"provider names are 1-64 letters, digits, '_', '-': {name!r}")
            value = dict(value)
            value["principals"] = tuple(value.get("principals", ()))
            providers[name] = Provider(name=name, **value)
        return cls(providers)

    @staticmethod
    def is_external(model_name: str) -> bool:
        return model_name.startswith(PREFIX)

    def provider_of(self, model_name: str) -> tuple[Provider, str]:
        """The provider and the provider's model name for `external.<provider>.<model>`."""
        provider_name, _, served = model_name[len(PREFIX) :].partition(".")
        provider = self._providers.get(provider_name)
        if provider is None or not served:
            raise NotFound(f"no external provider {provider_name!r} is configured (served model {model_name!r})")
        return provider, provider.remote_model(served)

    def require(self, principal: Principal, model_name: str) -> None:
        """May `principal` put this provider behind an endpoint (the provider's key pays for it)."""
        provider, _ = self.provider_of(model_name)
        if "*" not in provider.principals and principal.name not in provider.principals:
            raise PermissionDenied(f"permission denied: {principal.name} may not serve provider {provider.name!r}")

    def resolve(self, model_name: str, version: int | None, alias: str | None) -> ResolvedVersion:
        if version != 1 or alias:
            raise InvalidArgument(f"{model_name}: external models are served as version 1", field="served_models")
        provider, remote = self.provider_of(model_name)
        return ResolvedVersion(model_name, 1, f"external:{provider.name}:{provider.base_url}:{remote}")

    def runtime(self, version: ResolvedVersion) -> ExternalRuntime:
        provider, remote = self.provider_of(version.model_name)
        return ExternalRuntime(provider, remote, version.model_name)


class ExternalRuntime:
    """A ModelRuntime over an OpenAI-compatible server: streamed chat/completions with usage."""

    kind = LLM

    def __init__(self, provider: Provider, remote_model: str, served_as: str = "") -> None:
        self._provider = provider
        self._model = remote_model
        self._served_as = served_as  # chunks carry it, so the core need not copy each one to name it
        self._session: aiohttp.ClientSession | None = None
        self.statistics = RuntimeStatistics()

    async def start(self) -> None:
        p = self._provider
        key = p.api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._session = aiohttp.ClientSession(
            base_url=p.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=p.timeout_s, sock_connect=p.connect_timeout_s),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def inputs(self) -> Sequence[TensorSpec]:
        return (TensorSpec("text_input", "BYTES", (1,)),)

    def outputs(self) -> Sequence[TensorSpec]:
        return (TensorSpec("text_output", "BYTES", (1,)),)

    async def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise FailedPrecondition("this endpoint serves an LLM: send a text prompt (BYTES 'text_input')")

    async def generate(
        self, request_id: str, prompt: str | Sequence[Mapping[str, str]], sampling: SamplingSpec
    ) -> AsyncIterator[TextChunk]:
        if sampling.logprobs is not None or sampling.prompt_logprobs is not None:
            raise InvalidArgument("log probabilities are not passed through to external models")
        chat = not isinstance(prompt, str)
        body: dict[str, Any] = {
            "model": self._model,
            "stream": True,
            "stream_options": {"include_usage": True},
            **({"messages": [dict(m) for m in prompt]} if chat else {"prompt": prompt}),
        }
        for name in ("temperature", "top_p", "max_tokens", "seed"):
            value = getattr(sampling, name)
            if value is not None:
                body[name] = value
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.json_schema is not None:  # guided decoding is the provider's, asked the OpenAI way
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": json.loads(sampling.json_schema), "strict": True},
            }
        elif sampling.json_object:
            body["response_format"] = {"type": "json_object"}
        if sampling.ignore_eos:
            body["ignore_eos"] = True  # vLLM's extension; others refuse it, which is right
        started, ok = asyncio.get_running_loop().time(), False
        try:
            async for chunk in self._stream("chat/completions" if chat else "completions", body, chat, request_id):
                yield chunk
            ok = True
        finally:
            self.statistics.record(ok, int((asyncio.get_running_loop().time() - started) * 1e9))

    async def _stream(self, path: str, body: dict, chat: bool, request_id: str) -> AsyncIterator[TextChunk]:
        """The provider's events as chunks: every event that arrived in one read becomes one chunk.

        Reading whatever the socket holds, rather than a line at a time, costs one wake-up per
        read instead of two per event; and when the gateway is busy, the tokens that queued up
        meanwhile go out together, so a backlog costs one pass through the core, not one per token.
        """
        response = await self._open(path, body, request_id)
        lines = _DataLines()
        prompt_tokens = completion_tokens = 0
        finish_reason: str | None = None
        done = False
        try:
            while not done and (data := await response.content.readany()):
                texts = []
                for payload in lines.feed(data):
                    if payload == b"[DONE]":
                        done = True
                        break
                    event = json.loads(payload)
                    if not isinstance(event, dict):
                        raise ValueError("an event that is not a JSON object")
                    if "error" in event:
                        raise Unavailable(f"provider {self._provider.name!r} failed mid-stream")
                    usage = event.get("usage")
                    if usage:
                        prompt_tokens = _count(usage.get("prompt_tokens"), prompt_tokens)
                        completion_tokens = _count(usage.get("completion_tokens"), completion_tokens)
                    for choice in event.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                        finish_reason = choice.get("finish_reason") or finish_reason
                        if text:
                            texts.append(text)
                            completion_tokens += 1  # a running count; the provider's usage replaces it
                if texts:
                    yield TextChunk("".join(texts), prompt_tokens, completion_tokens, False, None, self._served_as, 1)
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, AttributeError) as exc:
            # A broken connection, or an answer that is not the OpenAI stream it claims to be.
            raise Unavailable(f"provider {self._provider.name!r} broke off the answer: {type(exc).__name__}") from None
        finally:
            response.release()
        yield TextChunk("", prompt_tokens, completion_tokens, True, finish_reason or "stop", self._served_as, 1)

    async def _open(self, path: str, body: dict, request_id: str) -> aiohttp.ClientResponse:
        """POST with retries on busy/failing answers and broken connections, with exponential backoff."""
        if self._session is None:
            raise Unavailable(f"provider {self._provider.name!r} is not started")
        p = self._provider
        reason = ""
        for attempt in range(p.max_retries + 1):
            if attempt:
                await asyncio.sleep(p.backoff_s * 2 ** (attempt - 1))
            try:
                response = await self._session.post(path, json=body, headers={"x-request-id": request_id})
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
                continue
            if response.status == 200:
                return response
            text = (await response.text())[:_MAX_ERROR_TEXT]
            response.release()
            if response.status in _RETRIED:
                reason = f"HTTP {response.status}"
                continue
            _log.info("provider %s refused %s: %d %s", p.name, request_id, response.status, text)
            if response.status in (401, 403):  # the gateway's key, not the caller's request
                raise Unavailable(f"provider {p.name!r} refused the gateway's credentials")
            raise InvalidArgument(f"provider {p.name!r} refused the request (HTTP {response.status})")
        raise Unavailable(f"provider {p.name!r} failed after {p.max_retries + 1} attempts ({reason})")


def _count(value: object, current: int) -> int:
    """A provider's token count: budgets are settled with it, so a count that is not one breaks the answer."""
    if value is None:
        return current
    if type(value) is not int or not 0 <= value < 2**31:
        raise ValueError(f"a token count of {value!r}")
    return value


class _DataLines:
    """The `data:` payloads of a server-sent-event stream, fed in whatever pieces the socket gives."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        lines = (self._partial + data).split(b"\n") if self._partial else data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > _MAX_LINE_BYTES:
            raise ValueError(f"an event line over {_MAX_LINE_BYTES} bytes")
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]


class CatalogWithExternal:
    """The registry's catalog, with `external.<provider>.<model>` names resolved from the providers instead."""

    def __init__(self, inner: Any, providers: ExternalProviders) -> None:
        self._inner = inner
        self.providers = providers

    async def resolve(self, model_name: str, version: int | None, alias: str | None) -> ResolvedVersion:
        if ExternalProviders.is_external(model_name):
            return self.providers.resolve(model_name, version, alias)
        return await self._inner.resolve(model_name, version, alias)

    async def fetch(self, version: ResolvedVersion) -> Path:
        return await self._inner.fetch(version)

    async def record_lineage(self, model_name: str, version: int, endpoint: str) -> None:
        if not ExternalProviders.is_external(model_name):  # the registry knows nothing of external models
            await self._inner.record_lineage(model_name, version, endpoint)

    async def close(self) -> None:
        await self._inner.close()
