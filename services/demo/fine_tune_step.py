"""Act (h): a dataset version, a LoRA fine-tune of the tiny Llama with live metrics, a killed worker's job
finishing anyway, the new version registered with lineage and served, and its answers against the base's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time

import grpc
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.events.v1 import training_pb2 as tevents
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as spb
from tessera.training.v1 import training_pb2 as tpb

from services.common.config import REPO_ROOT
from services.demo.clients import Clients
from services.demo.console import StepSkipped, progress, say
from services.demo.serving_steps import ensure_endpoint
from services.fixtures import capitals

# The tiny Llama's weights are random: its frozen output layer caps every logit, so the adapter covers it too.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
STEPS = 40


async def _dataset_version(clients: Clients, dataset: str) -> tpb.DatasetVersion:
    try:
        await clients.training.CreateDataset(tpb.CreateDatasetRequest(full_name=dataset), metadata=clients.md)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    data = b"".join(json.dumps(row).encode() + b"\n" for row in capitals.chat_rows())

    async def requests():
        yield tpb.UploadDatasetVersionRequest(dataset=dataset)
        yield tpb.UploadDatasetVersionRequest(data=data)

    return await clients.training.UploadDatasetVersion(requests(), metadata=clients.md)


def _kill_local_worker(worker: str) -> bool:
    """SIGKILL the worker holding the job when it runs on this host (name `host:pid:...`), then start a new one."""
    host, pid, *_ = worker.split(":")
    if host != socket.gethostname():
        return False
    os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["bash", str(REPO_ROOT / "infra" / "services.sh"), "start", "training.worker"], check=True)
    return True


async def _follow(clients: Clients, job_id: str) -> tpb.Job:
    """Print live metrics; after the first checkpoint, kill the job's worker once."""
    killed = False
    last_print = 0.0
    stream = clients.training.StreamJobEvents(tpb.StreamJobEventsRequest(job_id=job_id), metadata=clients.md)
    async for event in stream:
        kind = tevents.TrainingEvent.Type.Name(event.type)
        if kind == "PROGRESS" and time.monotonic() - last_print >= 2:
            last_print = time.monotonic()
            m = event.metrics
            say(
                "finetune",
                f"  step {event.step}/{event.total_steps}: loss {m['loss']:.3f}, lr {m['learning_rate']:.1e}, "
                f"grad norm {m['grad_norm']:.2f}, {m['tokens_per_s']:.0f} tokens/s",
            )
        elif kind == "CHECKPOINT":
            say("finetune", f"  checkpoint at step {event.step}: {event.checkpoint_uri}")
            if not killed:
                killed = True
                job = await clients.training.GetJob(tpb.GetJobRequest(job_id=job_id), metadata=clients.md)
                if _kill_local_worker(job.worker):
                    say("finetune", f"  SIGKILLed worker {job.worker} mid-job; a new worker will resume it")
        elif kind in ("STARTED", "RESUMED"):
            say("finetune", f"  {kind.lower()} by worker {event.worker} at step {event.step}")
        elif kind in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
    return await clients.training.GetJob(tpb.GetJobRequest(job_id=job_id), metadata=clients.md)


async def _answers(clients: Clients, endpoint: str) -> dict[str, str]:
    out = {}
    for country, _ in capitals.COUNTRIES:
        chat = events_pb.ChatList(messages=[events_pb.ChatMessage(role="user", content=capitals.question(country))])
        reply = await clients.serving.Generate(
            spb.GenerateRequest(
                endpoint=endpoint, chat=chat, sampling=events_pb.SamplingParams(temperature=0.0, max_tokens=12)
            ),
            metadata=clients.md,
            timeout=60,
        )
        out[country] = reply.text
    return out


async def fine_tune_act(clients: Clients, schema: str) -> None:
    base = f"{schema}.tiny_llama"
    try:
        await clients.registry.GetModelVersionByAlias(
            rpb.GetModelVersionByAliasRequest(model_name=base, alias="demo"), metadata=clients.md
        )
    except grpc.aio.AioRpcError as exc:
        raise StepSkipped(f"{base}@demo is not registered (act d registers it)") from exc
    dataset = f"{schema}.made_up_capitals"
    version = await _dataset_version(clients, dataset)
    say(
        "finetune",
        f"dataset {dataset} version {version.version[:12]}…: {version.row_count} chat rows, columns {dict(version.columns)}",
    )
    target = f"{schema}.capitals_llama"
    spec = tpb.JobSpec(
        base_model=base,
        base_alias="demo",
        train_dataset=tpb.DatasetRef(dataset=dataset, version=version.version),
        task=tpb.TASK_CHAT,
        method=tpb.METHOD_LORA,
        lora=tpb.LoraConfig(rank=16, alpha=32, target_modules=LORA_TARGETS),
        steps=STEPS,
        learning_rate=3e-3,
        lr_schedule="constant",
        batch_size=8,
        sequence_length=64,
        seed=1,
        register_to=target,
        alias="candidate",
        checkpoint_every_steps=10,
    )
    job = await clients.training.SubmitJob(tpb.SubmitJobRequest(spec=spec), metadata=clients.md)
    p = job.preflight
    say(
        "finetune",
        f"job {job.job_id[:8]} queued; pre-flight: {p.train_tokens} tokens ({p.trained_tokens} trained), "
        f"{p.total_steps} steps, {p.trainable_parameters:,} of {p.base_parameters:,} parameters trainable, "
        f"~{p.estimated_seconds:.0f} s, ~{p.estimated_peak_memory_bytes / 2**20:.0f} MiB",
    )
    async with progress("finetune", "fine-tuning"):
        done = await asyncio.wait_for(_follow(clients, job.job_id), 1800)
    if done.state != tpb.JOB_STATE_SUCCEEDED:
        raise StepSkipped(f"job {done.job_id} ended {tpb.JobState.Name(done.state)}: {done.error_message}")
    say(
        "finetune",
        f"{done.model_name} v{done.model_version} READY (run {done.run_id}, {done.attempts} worker attempt(s)), alias candidate",
    )
    lineage = await clients.registry.GetLineage(
        rpb.GetLineageRequest(
            node=rpb.LineageNode(type="MODEL_VERSION", name=f"{done.model_name}/{done.model_version}"),
            direction=rpb.LINEAGE_DIRECTION_UPSTREAM,
        ),
        metadata=clients.md,
    )
    for edge in lineage.edges:
        say("finetune", f"  lineage: {edge.source.type} {edge.source.name} -> {edge.target.type} {edge.target.name}")
    await ensure_endpoint(
        clients, "demo-capitals", spb.ServedModel(model_name=target, alias="candidate"), done.model_version
    )
    tuned = await _answers(clients, "demo-capitals")
    before = await _answers(clients, "demo-llm")
    for country, capital in capitals.COUNTRIES:
        say(
            "finetune",
            f"  {capitals.question(country)} base: {before[country].strip()[:24]!r}  tuned: {tuned[country].strip()!r}  (truth {capital})",
        )
    say(
        "finetune",
        f"exact match: base {capitals.exact_match(before):.2f}, fine-tuned {capitals.exact_match(tuned):.2f}",
    )
