"""An agent's latency overhead over its own retrieval and generation calls.

    python -m loadtests.agent_bench [--rounds 150] [--max-tokens 4] [--budget-s 240]

A registry, a retrieval service and a serving process (the tiny Llama of the
tests behind an LLM endpoint, and an agent over a corpus of runbooks pointing
at it), each its own process. Each round times (a) one gRPC `Generate` on the
agent endpoint, and (b) the same work done by hand: retrieval's `Query` with the
agent's request (question, k, mode, text), the agent's prompt rendered from
those hits (services/serving/agents.py's own functions), then `Generate` on the
LLM endpoint with that prompt. The order of (a) and (b) flips every round, so
load from elsewhere on the machine falls on both alike. Every generation is the
same `--max-tokens` tokens (greedy, ignore_eos). The overhead is (a) minus
(b): its p50 over the rounds (paired), and p50(a) - p50(b).

On a loaded machine the generation's own spread (hundreds of ms) hides a few
milliseconds, so the payload logs give a second, paired-within-one-request
figure: serving logs the agent call and its LLM call (`<id>.llm`) with their
latencies, so the agent's time outside its LLM call, minus the direct retrieval
Query of the same round, is the agent's overhead with the generation's spread
taken out. The run stops at `--budget-s` seconds of measuring, whatever
`--rounds` says. JSON under loadtests/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import grpc
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families
from tessera.events.v1 import payload_log_pb2
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.retrieval.v1 import retrieval_pb2 as qpb
from tessera.retrieval.v1 import retrieval_pb2_grpc
from tessera.serving.v1 import serving_pb2 as pb
from tessera.serving.v1 import serving_pb2_grpc

from loadtests.report import percentile_ms, save, table
from loadtests.serving_bench.processes import Process, free_port, python_module, wait_grpc
from services.common import kafka_admin
from services.common.auth import bearer
from services.fixtures.agents import RUNBOOKS, agent_spec, create_agent_endpoint, create_corpus_index, register_agent
from services.fixtures.registry_client import RegistryClient
from services.fixtures.tiny_llama import build_tiny_llama
from services.serving.agents import QUERY_MODES, build_context, parse_spec, render_prompt

TOKEN = "bench-token"
QUESTIONS = [
    "what to do when consumer lag grows",
    "the model's inputs drift away from the training data",
    "how do I roll back a bad model version",
    "which grant does querying an index need",
    "what does error TSR-403 mean",
    "the engine ran out of KV cache",
]


def log(message: str) -> None:
    print(f"[agent_bench] {message}", flush=True)


@contextlib.asynccontextmanager
async def mesh(work: Path, bootstrap: str):
    """Registry, retrieval and serving processes; yields (serving address, retrieval address, schema)."""
    u = uuid.uuid4().hex[:8]
    topics = {k: f"bench.agent.{k}.{u}" for k in ("registry", "requests", "responses", "payloads", "sync")}
    kafka_admin.ensure_topics(bootstrap, [*topics.values(), *(t + ".dlq" for t in topics.values())], partitions=1)
    common = {
        "TESSERA_AUTH_TOKENS": f"{TOKEN}=admin",
        "TESSERA_SERVICE_TOKEN": TOKEN,
        "TESSERA_LOG_LEVEL": "WARNING",
        "TESSERA_KAFKA_BOOTSTRAP": bootstrap,
    }
    registry_port, retrieval_port, serving_port = free_port(), free_port(), free_port()
    serving_metrics_port = free_port()
    processes: list[Process] = []
    try:
        registry = Process(
            "registry",
            python_module("services.registry"),
            {
                **common,
                "TESSERA_GRPC_PORT": str(registry_port),
                "TESSERA_METRICS_PORT": str(free_port()),
                "TESSERA_REGISTRY_HTTP_PORT": "-1",
                "TESSERA_REGISTRY_SCHEMA": f"registry_agentbench{u}",
                "TESSERA_REGISTRY_ARTIFACT_ROOT": str(work / "artifacts"),
                "TESSERA_REGISTRY_EVENTS_TOPIC": topics["registry"],
            },
            work,
        )
        processes.append(registry)
        await wait_grpc(registry, f"127.0.0.1:{registry_port}")
        retrieval = Process(
            "retrieval",
            python_module("services.retrieval"),
            {
                **common,
                "TESSERA_GRPC_PORT": str(retrieval_port),
                "TESSERA_METRICS_PORT": str(free_port()),
                "TESSERA_REGISTRY_ADDRESS": f"127.0.0.1:{registry_port}",
                "TESSERA_RETRIEVAL_SCHEMA": f"retrieval_agentbench{u}",
                "TESSERA_RETRIEVAL_SYNC_TOPIC": topics["sync"],
                "TESSERA_RETRIEVAL_SYNC_GROUP": f"agent-bench-{u}",
                "TESSERA_RETRIEVAL_RUN_SYNC_CONSUMER": "false",
                "TESSERA_RETRIEVAL_REGISTRY_EVENTS_TOPIC": topics["registry"],
            },
            work,
        )
        processes.append(retrieval)
        serving = Process(
            "serving",
            python_module("services.serving"),
            {
                **common,
                "TESSERA_GRPC_PORT": str(serving_port),
                "TESSERA_METRICS_PORT": str(serving_metrics_port),
                "TESSERA_REGISTRY_ADDRESS": f"127.0.0.1:{registry_port}",
                "TESSERA_RETRIEVAL_ADDRESS": f"127.0.0.1:{retrieval_port}",
                "TESSERA_SERVING_SCHEMA": f"serving_agentbench{u}",
                "TESSERA_SERVING_MODEL_CACHE": str(work / "cache"),
                "TESSERA_SERVING_REQUESTS_TOPIC": topics["requests"],
                "TESSERA_SERVING_RESPONSES_TOPIC": topics["responses"],
                "TESSERA_SERVING_PAYLOAD_TOPIC": topics["payloads"],
                "TESSERA_SERVING_REGISTRY_EVENTS_TOPIC": topics["registry"],
                "TESSERA_SERVING_CONSUMER_GROUP": f"agent-bench-{u}",
                "TESSERA_SERVING_MAX_MODEL_LEN": "1024",
                "TESSERA_SERVING_KV_CACHE_MIB": "128",
                "TESSERA_SERVING_MAX_NUM_SEQS": "8",
                "TESSERA_SERVING_HTTP_PORT": "-1",
            },
            work,
        )
        processes.append(serving)
        await wait_grpc(retrieval, f"127.0.0.1:{retrieval_port}")
        await wait_grpc(serving, f"127.0.0.1:{serving_port}")
        yield (
            f"127.0.0.1:{serving_port}",
            f"127.0.0.1:{retrieval_port}",
            f"127.0.0.1:{registry_port}",
            u,
            topics["payloads"],
            f"http://127.0.0.1:{serving_metrics_port}/metrics",
        )
    finally:
        for process in reversed(processes):
            process.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=240.0, help="stop measuring after this long")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    log(f"logs in {work}")
    md = bearer(TOKEN)
    async with mesh(work, args.bootstrap) as (
        serving_address,
        retrieval_address,
        registry_address,
        u,
        payload_topic,
        metrics_url,
    ):
        registry = RegistryClient(registry_address, TOKEN)
        await registry.ensure_schema(f"bench{u}", "models")
        await registry.stub.CreateSchema(
            rpb.CreateSchemaRequest(catalog_name=f"bench{u}", name="docs"),
            metadata=md,
        )
        llm_model, agent_model = f"bench{u}.models.tiny_llama", f"bench{u}.models.runbook_agent"
        index = f"bench{u}.docs.runbooks"
        await registry.register(llm_model, build_tiny_llama())
        serving_channel = grpc.aio.insecure_channel(serving_address)
        retrieval_channel = grpc.aio.insecure_channel(retrieval_address)
        serving = serving_pb2_grpc.ServingServiceStub(serving_channel)
        retrieval = retrieval_pb2_grpc.RetrievalServiceStub(retrieval_channel)
        created = await serving.CreateEndpoint(
            pb.CreateEndpointRequest(
                name="bench-llm", served_models=[pb.ServedModel(model_name=llm_model, version=1)], wait=True
            ),
            metadata=md,
            timeout=600,
        )
        if created.state != "READY":
            raise RuntimeError(f"LLM endpoint did not load: {created.state_reason}")
        log("LLM endpoint ready; indexing the runbooks")
        await create_corpus_index(retrieval, TOKEN, index, RUNBOOKS)
        spec_json = agent_spec("bench-llm", index, k=args.k)
        version = await register_agent(registry, agent_model, spec_json)
        created = await create_agent_endpoint(serving, TOKEN, "bench-agent", agent_model, version)
        if created.state != "READY":
            raise RuntimeError(f"agent endpoint did not load: {created.state_reason}")
        spec = parse_spec(spec_json)
        sampling = events_pb.SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)

        async def agent_call(question: str, request_id: str = "") -> float:
            started = time.perf_counter()
            answer = await serving.Generate(
                pb.GenerateRequest(endpoint="bench-agent", prompt=question, sampling=sampling, request_id=request_id),
                metadata=md,
            )
            assert answer.completion_tokens == args.max_tokens and len(answer.citations) == args.k
            return time.perf_counter() - started

        async def direct_calls(question: str) -> tuple[float, float]:
            started = time.perf_counter()
            reply = await retrieval.Query(
                qpb.QueryRequest(
                    index=index, text=question, k=spec.k, mode=QUERY_MODES[spec.query_mode], include_text=True
                ),
                metadata=md,
            )
            retrieved = time.perf_counter()
            _, context = build_context(spec, reply.hits)
            prompt = render_prompt(spec, context, question)
            answer = await serving.Generate(
                pb.GenerateRequest(endpoint="bench-llm", prompt=prompt, sampling=sampling), metadata=md
            )
            assert answer.completion_tokens == args.max_tokens
            return retrieved - started, time.perf_counter() - retrieved

        for question in QUESTIONS:  # warm: embeddings, prompt caches, connections, privilege caches
            await agent_call(question)
            await direct_calls(question)
        log(f"measuring up to {args.rounds} rounds (at most {args.budget_s:.0f} s)")
        steps_before = await agent_steps(metrics_url)
        agent_s: list[float] = []
        retrieval_s: list[float] = []
        llm_s: list[float] = []
        deadline = time.monotonic() + args.budget_s
        last_log = time.monotonic()
        for round_ in range(args.rounds):
            question = QUESTIONS[round_ % len(QUESTIONS)]
            request_id = f"agent-bench-{u}-{round_}"
            if round_ % 2 == 0:
                agent_s.append(await agent_call(question, request_id))
                r, g = await direct_calls(question)
            else:
                r, g = await direct_calls(question)
                agent_s.append(await agent_call(question, request_id))
            retrieval_s.append(r)
            llm_s.append(g)
            if time.monotonic() - last_log > 5:
                last_log = time.monotonic()
                log(f"round {round_ + 1}: agent {agent_s[-1] * 1000:.1f} ms, direct {(r + g) * 1000:.1f} ms")
            if time.monotonic() > deadline:
                log(f"time budget reached after {round_ + 1} rounds")
                break
        steps = steps_between(steps_before, await agent_steps(metrics_url))
        await serving_channel.close()
        await retrieval_channel.close()
        await registry.channel.close()
        ids = [f"agent-bench-{u}-{i}" for i in range(len(agent_s))]
        latencies = await asyncio.to_thread(logged_latencies, args.bootstrap, payload_topic, ids)

    direct_s = [r + g for r, g in zip(retrieval_s, llm_s, strict=True)]
    overhead_s = [a - d for a, d in zip(agent_s, direct_s, strict=True)]
    # In the agent's own requests: the agent call's logged latency less its LLM call's, less the
    # agent's own wait for retrieval (serving's histogram over the same requests): both noisy calls
    # are measured on the very requests they are subtracted from.
    logged = [rid for rid in ids if rid in latencies and f"{rid}.llm" in latencies]
    outside_llm_ms = [latencies[rid] - latencies[f"{rid}.llm"] for rid in logged]
    retrieval_wait_ms = steps["retrieval"]["sum"] / max(steps["retrieval"]["count"], 1) * 1000
    result = {
        "rounds": len(agent_s),
        "max_tokens": args.max_tokens,
        "k": args.k,
        "agent_p50_ms": percentile_ms(agent_s, 50),
        "agent_p95_ms": percentile_ms(agent_s, 95),
        "retrieval_p50_ms": percentile_ms(retrieval_s, 50),
        "llm_p50_ms": percentile_ms(llm_s, 50),
        "direct_p50_ms": percentile_ms(direct_s, 50),
        "direct_p95_ms": percentile_ms(direct_s, 95),
        "overhead_paired_p50_ms": percentile_ms(overhead_s, 50),
        "overhead_p50_difference_ms": percentile_ms(agent_s, 50) - percentile_ms(direct_s, 50),
        "overhead_mean_ms": statistics.fmean(overhead_s) * 1000,
        "logged_rounds": len(logged),
        "agent_retrieval_wait_mean_ms": retrieval_wait_ms,
        "overhead_in_request_mean_ms": (statistics.fmean(outside_llm_ms) - retrieval_wait_ms)
        if outside_llm_ms
        else float("nan"),
        "agent_own_calls": steps["own"]["count"],
        "agent_own_mean_ms": steps["own"]["sum"] / max(steps["own"]["count"], 1) * 1000,
        "agent_own_p50_ms_at_most": bucket_quantile(steps["own"], 0.5) * 1000,
    }
    print()
    print(
        table(
            [
                "rounds",
                "agent p50",
                "retrieval p50",
                "LLM p50",
                "direct sum p50",
                "overhead p50 (paired)",
                "p50(agent) - p50(direct)",
            ],
            [
                [
                    result["rounds"],
                    result["agent_p50_ms"],
                    result["retrieval_p50_ms"],
                    result["llm_p50_ms"],
                    result["direct_p50_ms"],
                    result["overhead_paired_p50_ms"],
                    result["overhead_p50_difference_ms"],
                ]
            ],
        )
    )
    print()
    print(
        table(
            [
                "logged rounds",
                "agent's retrieval wait mean",
                "in-request overhead mean",
                "agent's own work mean",
                "own work p50 (bucket bound)",
            ],
            [
                [
                    result["logged_rounds"],
                    result["agent_retrieval_wait_mean_ms"],
                    result["overhead_in_request_mean_ms"],
                    result["agent_own_mean_ms"],
                    result["agent_own_p50_ms_at_most"],
                ]
            ],
        )
    )
    print(f"\nresults: {save('agent_bench', result)}")


async def agent_steps(url: str) -> dict[str, dict]:
    """serving's tessera_serving_agent_step_seconds per step: count, sum and cumulative buckets."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    steps: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "tessera_serving_agent_step_seconds":
            continue
        for sample in family.samples:
            step = steps.setdefault(sample.labels["step"], {"count": 0.0, "sum": 0.0, "buckets": {}})
            if sample.name.endswith("_count"):
                step["count"] = sample.value
            elif sample.name.endswith("_sum"):
                step["sum"] = sample.value
            elif sample.name.endswith("_bucket"):
                step["buckets"][float(sample.labels["le"])] = sample.value
    return steps


def steps_between(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    empty = {"count": 0.0, "sum": 0.0, "buckets": {}}
    result = {}
    for step in ("retrieval", "generation", "own"):
        a, b = after.get(step, empty), before.get(step, empty)
        result[step] = {
            "count": a["count"] - b["count"],
            "sum": a["sum"] - b["sum"],
            "buckets": {le: n - b["buckets"].get(le, 0.0) for le, n in a["buckets"].items()},
        }
    return result


def bucket_quantile(step: dict, q: float) -> float:
    """The smallest bucket bound holding at least `q` of the observations (an upper bound on the quantile)."""
    total = step["count"]
    for le, n in sorted(step["buckets"].items()):
        if total and n >= q * total:
            return le
    return float("nan")


def logged_latencies(bootstrap: str, topic: str, ids: list[str], timeout_s: float = 120.0) -> dict[str, float]:
    """latency_ms of the payload-log records of `ids` and their LLM calls, read from the topic's start."""
    wanted = {*ids, *(f"{rid}.llm" for rid in ids)}
    found: dict[str, float] = {}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"agent-bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    try:
        while wanted - found.keys() and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            record = payload_log_pb2.PayloadLog.FromString(message.value())
            if record.request_id in wanted and record.status == "OK":
                found[record.request_id] = record.latency_ms
    finally:
        consumer.close()
    log(f"read {len(found)} of {len(wanted)} payload-log records")
    return found


if __name__ == "__main__":
    asyncio.run(main())
