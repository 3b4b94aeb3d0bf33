"""`make demo`: Tessera's main scenario, as a client of the services `make up` started.

  (a) train a small PyTorch scorer, tracked with the stock mlflow client against the registry;
  (b) register it as a model version and point the `champion` alias at it;
  (c) serve it on an endpoint that follows the alias, call it over gRPC and over Kafka;
  (d) register the tiny Llama and stream tokens from it (TESSERA_DEMO_LLM=0 skips this);
  (e) watch the scorer for drift, send traffic that shifts, read the alarm back, draw it;
  (f) index a few documents with managed embeddings and run hybrid queries;
  (g) print the model version's lineage;
  (h) fine-tune the tiny Llama with LoRA on made-up capitals (a dataset version, live metrics,
      a worker killed mid-job and the job finishing anyway), serve it, compare its answers;
  (i) a RAG agent over the runbooks (retrieval -> prompt -> the tiny Llama) answering with citations;
  (j) evaluate the base and the fine-tuned Llama on one dataset version, compare them row by row
      with intervals, and move the `champion` alias to the fine-tuned version if it is detectably better.

Every run trains and registers a new version; endpoints, indexes and schemas are
reused, so running it again is safe. Each step prints one line; slow ones report
progress every few seconds.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from collections.abc import Awaitable

import grpc
from tessera.serving.v1 import serving_pb2 as spb

from services.common import config
from services.demo.agent_step import agent_act
from services.demo.clients import Clients
from services.demo.console import StepSkipped, progress, say
from services.demo.evaluation_step import evaluation_act
from services.demo.fine_tune_step import fine_tune_act
from services.demo.monitoring_step import drift_act
from services.demo.retrieval_lineage import lineage_act, retrieval_act
from services.demo.serving_steps import call_over_kafka, ensure_endpoint, score, tiny_llama
from services.demo.settings import DemoSettings
from services.demo.training import train_and_register, training_data

SCORER_ENDPOINT = "demo-scorer"


async def step(name: str, title: str, work: Awaitable, problems: list[str]):
    """Run one act; a failure is reported in one line and the demo goes on."""
    say(name, f"--- {title}")
    try:
        return await work
    except StepSkipped as exc:
        problems.append(f"{title}: {exc}")
        say(name, f"SKIPPED: {exc}")
    except grpc.aio.AioRpcError as exc:
        problems.append(f"{title}: {exc.code().name}: {exc.details()}")
        say(name, f"FAILED: the service answered {exc.code().name}: {exc.details()}")
    except Exception as exc:  # noqa: BLE001 - one broken act must not hide the others
        problems.append(f"{title}: {type(exc).__name__}: {exc}")
        say(name, f"FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc(limit=3)
    return None


async def serve_scorer(clients: Clients, model_name: str, version: int) -> None:
    served = spb.ServedModel(model_name=model_name, alias="champion")
    await ensure_endpoint(clients, SCORER_ENDPOINT, served, version)
    x, y = training_data(5, seed=99)
    answered_version, scores = await score(clients, SCORER_ENDPOINT, x)
    say("serve", f"gRPC (Open Inference Protocol) ModelInfer on {SCORER_ENDPOINT}: answered by v{answered_version}")
    for row, p, label in zip(x, scores, y, strict=True):
        say(
            "serve",
            f"  features [{', '.join(f'{v:+.2f}' for v in row)}] -> churn probability {p:.3f} (label {int(label)})",
        )
    response = await call_over_kafka(clients, SCORER_ENDPOINT, x[0].tolist())
    say(
        "kafka",
        f"reply on tessera.serving.responses: status {response.status}, v{response.model_version}, "
        f"score {response.tensors['score'][0][0]:.3f} (gRPC said {scores[0]:.3f}), {response.latency_ms:.1f} ms",
    )


async def main() -> int:
    settings = config.load(DemoSettings)
    clients = Clients(settings)
    started = time.perf_counter()
    say(
        "start",
        f"services: {clients.addresses}, MLflow REST at {settings.mlflow_url}, Kafka at {settings.kafka_bootstrap}",
    )
    missing = await clients.not_answering()
    if missing:
        say("start", "these do not answer: " + "; ".join(missing))
        say("start", "start the platform first with `make up` (or `bash infra/services.sh start`), then `make demo`")
        await clients.close()
        return 2
    say("start", "registry, serving, monitoring, retrieval, training, evaluation and the MLflow REST API answer")
    problems: list[str] = []
    catalog = settings.demo_catalog
    models = await clients.ensure_schema(catalog, "models")
    docs = await clients.ensure_schema(catalog, "docs")
    model_name = f"{models}.scorer"

    async def train():
        async with progress("train", "training and registering"):
            return await asyncio.to_thread(
                train_and_register,
                settings.mlflow_url,
                settings.token,
                model_name,
                "demo-churn-scorer",
                settings.data_dir / "demo",
            )

    trained = await step("train", "(a+b) train with mlflow, register, alias champion", train(), problems)
    if trained is not None:
        say(
            "register",
            f"{trained.model_name} v{trained.version} READY (run {trained.run_id}), alias champion -> v{trained.version}",
        )
        await step(
            "serve",
            "(c) serve the champion over gRPC and Kafka",
            serve_scorer(clients, model_name, trained.version),
            problems,
        )
    if settings.demo_llm:
        await step("llm", "(d) the tiny Llama: register, serve, stream", tiny_llama(clients, models), problems)
    else:
        say("llm", "--- (d) skipped: TESSERA_DEMO_LLM=0")
    if trained is not None:
        out = settings.data_dir / "demo" / "drift.png"
        await step(
            "drift",
            "(e) drift monitoring on live traffic",
            drift_act(clients, SCORER_ENDPOINT, trained.train_features, trained.train_scores, out),
            problems,
        )
    await step("retrieval", "(f) retrieval with managed embeddings", retrieval_act(clients, docs), problems)
    if trained is not None:
        await step(
            "lineage", "(g) lineage of the model version", lineage_act(clients, model_name, trained.version), problems
        )
    if settings.demo_llm:
        before = len(problems)
        await step(
            "finetune", "(h) fine-tune the tiny Llama on made-up capitals", fine_tune_act(clients, models), problems
        )
        tuned = len(problems) == before
        await step(
            "agent", "(i) a RAG agent over the runbooks, with citations", agent_act(clients, models, docs), problems
        )
        if tuned:
            await step(
                "evaluate",
                "(j) evaluate base vs fine-tuned with intervals, promote the winner",
                evaluation_act(clients, models),
                problems,
            )
    await clients.close()
    elapsed = time.perf_counter() - started
    if problems:
        say("done", f"finished in {elapsed:.0f} s with {len(problems)} step(s) not done:")
        for problem in problems:
            say("done", f"  - {problem}")
        return 1
    say("done", f"the whole scenario ran in {elapsed:.0f} s")
    say(
        "done",
        f"the playground: {settings.playground_url} (sign in with your token; on this machine {settings.token}) "
        "to chat, compare, label answers into a dataset version and run evaluations",
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
