"""POST /v1/embeddings: texts through an endpoint that serves an embedding model."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from aiohttp import web

from services.common.errors import InvalidArgument
from services.serving.entities import EmbedCall
from services.serving.inference import InferenceCore
from services.serving.openai_api.generation import HttpCall
from services.serving.openai_api.protocol import labels_of

_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
_FORMATS = ("float", "base64")


def parse_embeddings(body: Any, http: HttpCall) -> tuple[EmbedCall, str]:
    """The core's call and the encoding asked for; bounds on the texts are the core's (EmbedCall.check)."""
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidArgument(f"unrecognized request argument supplied: {', '.join(unknown)}", field=unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgument("model is required", field="model")
    raw = body.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = raw
    elif isinstance(raw, list) and raw and all(isinstance(t, int | list) for t in raw):
        raise InvalidArgument("token-id input is not served: send text", field="input")
    else:
        raise InvalidArgument("input must be a string or a non-empty list of strings", field="input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in _FORMATS:
        raise InvalidArgument("encoding_format is 'float' or 'base64'", field="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise InvalidArgument("dimensions must be an integer", field="dimensions")
    call = EmbedCall(
        endpoint=model,
        request_id=http.request_id,
        source="http",
        texts=texts,
        dimensions=dimensions,
        size_bytes=http.size_bytes,
        labels=labels_of(body),
    )
    return call, encoding


async def embeddings(inference: InferenceCore, body: Any, http: HttpCall) -> web.Response:
    call, encoding = parse_embeddings(body, http)
    result = await inference.embed(call, http.principal)
    vectors = np.asarray(result.vectors, dtype="<f4")
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)} for i, vector in enumerate(vectors)
    ]
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": call.endpoint,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        },
        headers={"x-request-id": http.request_id},
    )


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    # base64: the little-endian float32 bytes, as OpenAI sends them (the SDK's default).
    return base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector.tolist()
