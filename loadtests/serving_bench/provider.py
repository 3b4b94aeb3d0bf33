"""A paced OpenAI-compatible provider: the far side of the gateway-overhead measurement.

    python -m loadtests.serving_bench.provider --port 8199 [--token-ms 5] [--first-token-ms 20]

It answers `/v1/chat/completions` and `/v1/completions` (streamed or not) with
`max_tokens` tokens at a fixed pace (token i is due `first-token-ms + i * token-ms`
after the request, so a late wake-up on a loaded machine does not delay the rest),
plus the usage chunk, and spends no CPU between tokens. That is what a hosted model looks like from the gateway, minus
its noise: the difference between calling it directly and through Tessera is the
gateway's own added latency, which a CPU engine's run-to-run spread (tens of ms on
this machine) would hide. LiteLLM publishes its 12 ms / 43 ms figures against a
fake endpoint in the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from aiohttp import web

MAX_TOKENS = 4096


def _chunk(kind: str, model: str, created: int, rid: str, text: str | None, finish: str | None) -> bytes:
    if kind == "chat":
        choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish}
        obj = "text_completion"
    event = {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def app(token_s: float, first_token_s: float) -> web.Application:
    async def complete(request: web.Request, kind: str) -> web.StreamResponse:
        body = await request.json()
        tokens = max(1, min(int(body.get("max_tokens") or 16), MAX_TOKENS))
        model, created, rid = str(body.get("model", "")), int(time.time()), f"cmpl-{uuid.uuid4().hex}"
        prompt_tokens = len(json.dumps(body.get("messages") or body.get("prompt") or "").split())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}
        # Token i is due at a fixed time after the request came in, as a remote model's would be:
        # pauses that overshoot on a loaded machine do not add up over the stream.
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def until(due: float) -> None:
            await asyncio.sleep(max(0.0, started + due - loop.time()))

        await until(first_token_s)
        if not body.get("stream"):
            await until(first_token_s + token_s * (tokens - 1))
            text = " tok" * tokens
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                if kind == "chat"
                else {"index": 0, "text": text, "finish_reason": "length"}
            )
            return web.json_response({"id": rid, "object": kind, "created": created, "model": model,
                                      "choices": [choice], "usage": usage})  # fmt: skip
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(tokens):
            if i:
                await until(first_token_s + token_s * i)
            await response.write(_chunk(kind, model, created, rid, " tok", "length" if i == tokens - 1 else None))
        if (body.get("stream_options") or {}).get("include_usage"):
            event = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [], "usage": usage}  # fmt: skip
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def chat(request: web.Request) -> web.StreamResponse:
        return await complete(request, "chat")

    async def completions(request: web.Request) -> web.StreamResponse:
        return await complete(request, "text")

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    application = web.Application()
    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_post("/v1/completions", completions)
    application.router.add_get("/health", health)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-ms", type=float, default=5.0, help="pause between tokens")
    parser.add_argument("--first-token-ms", type=float, default=20.0, help="pause before the first token")
    args = parser.parse_args()
    web.run_app(
        app(args.token_ms / 1000, args.first_token_ms / 1000), host="127.0.0.1", port=args.port, print=None,
        access_log=None,
    )  # fmt: skip


if __name__ == "__main__":
    main()
