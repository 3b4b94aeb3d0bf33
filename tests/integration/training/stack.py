"""A registry, the training API and training worker processes on the real Kafka and PostgreSQL, and a client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.registry.v1 import registry_pb2_grpc
from tessera.training.v1 import training_pb2 as pb
from tessera.training.v1 import training_pb2_grpc

from services.common.auth import bearer

REPO = Path(__file__).resolve().parents[3]
ADMIN, ALICE, BOB, SERVICE = "admin-token", "alice-token", "bob-token", "svc-token"
TOKENS = f"{ADMIN}=admin,{ALICE}=alice,{BOB}=bob,{SERVICE}=training-svc"
FINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


@dataclass
class Workers:
    """Worker processes (`python -m services.training.worker`), each its own PID so a test can SIGKILL one."""

    env: dict[str, str]
    log_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> subprocess.Popen:
        log = (self.log_dir / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.training.worker"], cwd=REPO, env=self.env, stdout=log, stderr=log
        )
        self.procs.append(proc)
        return proc

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            if proc.pid == pid:
                proc.wait(30)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class Stack:
    registry_address: str
    training_address: str
    catalog: str
    schema: str
    base_model: str
    workers: Workers
    channel: grpc.aio.Channel
    registry_channel: grpc.aio.Channel
    root: Path
    payload_topic: str
    kafka_bootstrap: str
    monitoring_address: str
    registry_http_url: str
    training_metrics_url: str

    @property
    def training(self) -> training_pb2_grpc.TrainingServiceStub:
        return training_pb2_grpc.TrainingServiceStub(self.channel)

    @property
    def registry(self) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self.registry_channel)

    async def create_dataset(self, name: str, token: str = ALICE) -> str:
        full = f"{self.catalog}.{self.schema}.{name}"
        await self.training.CreateDataset(pb.CreateDatasetRequest(full_name=full), metadata=bearer(token))
        return full

    async def upload(self, dataset: str, rows: list[dict] | bytes, token: str = ALICE) -> pb.DatasetVersion:
        data = rows if isinstance(rows, bytes) else b"".join(json.dumps(r).encode() + b"\n" for r in rows)

        async def requests():
            yield pb.UploadDatasetVersionRequest(dataset=dataset)
            for start in range(0, len(data), 100):  # split mid-line on purpose
                yield pb.UploadDatasetVersionRequest(data=data[start : start + 100])

        return await self.training.UploadDatasetVersion(requests(), metadata=bearer(token))

    def spec(self, dataset: str, version: str, register_to: str, **kw) -> pb.JobSpec:
        values = dict(
            base_model=self.base_model,
            base_version=1,
            train_dataset=pb.DatasetRef(dataset=dataset, version=version),
            task=pb.TASK_CHAT,
            method=pb.METHOD_FULL,
            steps=30,
            learning_rate=1e-3,
            lr_schedule="constant",
            batch_size=8,
            sequence_length=64,
            seed=7,
            register_to=f"{self.catalog}.{self.schema}.{register_to}",
        )
        values.update(kw)
        return pb.JobSpec(**values)

    async def wait(self, job_id: str, token: str = ALICE, timeout: float = 1500, until=FINAL) -> pb.Job:
        async with asyncio.timeout(timeout):
            while True:
                job = await self.training.GetJob(pb.GetJobRequest(job_id=job_id), metadata=bearer(token))
                if job.state in until if isinstance(until, tuple) else until(job):
                    return job
                await asyncio.sleep(1)

    async def download_version(self, model: str, version: int, dest: Path) -> Path:
        target = rpb.ArtifactTarget(model_version=rpb.ModelVersionRef(model_name=model, version=version))
        listing = await self.registry.ListArtifacts(rpb.ListArtifactsRequest(target=target), metadata=bearer(ADMIN))
        for info in listing.files:
            if info.is_dir:
                continue
            out = dest / info.path
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("wb") as f:
                async for chunk in self.registry.DownloadArtifacts(
                    rpb.DownloadArtifactsRequest(target=target, path=info.path), metadata=bearer(ADMIN)
                ):
                    f.seek(chunk.offset)
                    f.write(chunk.data)
        return dest

    async def metric_history(self, run_id: str, key: str) -> dict[int, float]:
        """The last value logged per step (a resumed job re-logs the steps after its checkpoint)."""
        reply = await self.registry.GetMetricHistory(
            rpb.GetMetricHistoryRequest(run_id=run_id, metric_key=key, page={"page_size": 10000}),
            metadata=bearer(ADMIN),
        )
        out: dict[int, float] = {}
        for m in sorted(reply.metrics, key=lambda m: m.timestamp_ms):
            out[m.step] = m.value
        return out
