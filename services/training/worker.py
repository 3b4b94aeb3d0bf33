"""Training workers: `python -m services.training.worker` (as many as you like, on any host sharing the root).

A worker takes one job at a time from PostgreSQL under a lease it renews by
heartbeat: the oldest queued job, or a running one whose worker stopped
heartbeating, which it resumes from its last checkpoint. Records on
`tessera.training.jobs` (consumer group `tessera-training-workers`) only wake
workers early; PostgreSQL is the truth. The training itself runs in a child
process (under torchrun when the job asks for more than one), which dies with
its worker; the worker relays its progress to the registry run, to
`tessera.training.events`, to the job's event table and to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

from tessera.events.v1 import training_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as rpb

from services.common import telemetry
from services.common.config import load
from services.common.db import Database, migrate
from services.common.kafka_consumer import ConsumerLoop
from services.common.kafka_producer import EventProducer
from services.common.lifecycle import run_service
from services.training.entities import CANCELLED, FAILED, SUCCEEDED, Job, JobEvent
from services.training.registry_client import TrainingRegistry
from services.training.settings import TrainingSettings
from services.training.store import TrainingStore
from services.training.trainer import Plan

_log = logging.getLogger("services.training.worker")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int):
    def set_signal() -> None:
        # The child must not outlive a killed worker: another worker will resume its job.
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)

    return set_signal


class JobLost(Exception):
    """Another worker holds the job now (this worker's lease expired)."""


class TrainingWorker:
    def __init__(self, settings: TrainingSettings, *, name: str = "", consume: bool = True) -> None:
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.consume = consume
        self.db: Database | None = None
        self.store: TrainingStore | None = None
        self.registry = TrainingRegistry(
            settings.registry_address, settings.service_token, settings.training_run_as_token
        )
        self.producer: EventProducer | None = None
        self.consumer: ConsumerLoop | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.root = settings.root()

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.db = await Database(s.resolved_pg_dsn(), s.training_schema, max_size=4).open()
        await migrate(self.db, MIGRATIONS)
        self.store = TrainingStore(self.db)
        self.producer = EventProducer(s.kafka_bootstrap, client_id=f"training-worker-{self.name}")
        if self.consume:
            self.consumer = ConsumerLoop(
                bootstrap=s.kafka_bootstrap,
                group_id=s.training_consumer_group,
                topics=[s.training_jobs_topic],
                message_type=events_pb.TrainingJob,
                handler=self._on_records,
                dlq_producer=self.producer,
            )
            self._tasks.append(asyncio.create_task(self.consumer.run(), name="training-jobs-consumer"))
        loop = asyncio.create_task(self._loop(), name="training-worker")
        self._tasks += [loop, asyncio.create_task(self._alive(loop), name="training-worker-alive")]
        _log.info("training worker %s started (root %s)", self.name, self.root)

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self.consumer is not None:
            self.consumer.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.registry.close()
        if self.producer is not None:
            self.producer.close()
        if self.db is not None:
            await self.db.close()

    async def _alive(self, loop: asyncio.Task) -> None:
        """Touch the alive file while the job loop runs: the container's only liveness signal."""
        path = self.settings.worker_alive_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        while not loop.done():
            try:
                path.touch()
            except OSError:
                _log.warning("could not touch %s", path, exc_info=True)
            await asyncio.sleep(self.settings.training_heartbeat_s)
        _log.error("the job loop ended (%s); %s goes stale", loop, path)

    async def _on_records(self, records) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = await self.store.claim(self.name, self.settings.training_lease_s)
            except Exception:  # noqa: BLE001 - the database may be away for a moment
                _log.exception("claiming a job failed; retrying")
                job = None
            if job is not None:
                await self._run(job)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.training_poll_s)

    # -- one job ------------------------------------------------------------------

    async def _event(self, job: Job, kind: str, **body) -> None:
        event = await self.store.add_event(JobEvent(seq=0, job_id=job.job_id, type=kind, worker=self.name, **body))
        message = events_pb.TrainingEvent(
            event_id=f"{job.job_id}:{event.seq}",
            job_id=job.job_id,
            type=events_pb.TrainingEvent.Type.Value(kind),
            run_id=event.run_id,
            step=event.step,
            total_steps=event.total_steps,
            metrics=event.metrics,
            checkpoint_uri=event.checkpoint_uri,
            model_name=event.model_name,
            model_version=event.model_version,
            error_message=event.error_message,
            worker=self.name,
        )
        message.at.GetCurrentTime()
        try:
            await self.producer.send(self.settings.training_events_topic, message, key=job.job_id)
        except Exception:  # noqa: BLE001 - the job's event table already holds it
            _log.warning("could not publish %s of job %s", kind, job.job_id)

    async def _run(self, job: Job) -> None:
        resumed = job.attempts > 1
        _log.info("job %s: %s (attempt %d)", job.job_id, "resuming" if resumed else "starting", job.attempts)
        try:
            await self._train(job, resumed)
        except JobLost:
            _log.warning("job %s: lost its lease; another worker continues it", job.job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a job's failure must not stop the worker
            _log.exception("job %s failed", job.job_id)
            try:
                await self._finish(job, FAILED, error=f"{exc.__class__.__name__}: {str(exc)[:500]}")
            except Exception:  # noqa: BLE001 - the lease expires and another worker retries the job
                _log.exception("job %s: recording its failure failed", job.job_id)

    async def _holding(self, job: Job, work):
        """Run `work` while renewing the job's lease (downloads and uploads can outlast it); JobLost if lost."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.settings.training_heartbeat_s)
                if await self.store.heartbeat(job.job_id, self.name, self.settings.training_lease_s, 0) is None:
                    return

        task, beating = asyncio.ensure_future(work), asyncio.create_task(beat())
        try:
            done, _ = await asyncio.wait({task, beating}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            beating.cancel()
        if task not in done:
            task.cancel()
            raise JobLost()
        return task.result()

    async def _finish(self, job: Job, state: str, *, error: str = "", **fields) -> None:
        updated = await self.store.update_job(job.job_id, self.name, state=state, error_message=error, **fields)
        if updated is None:
            return
        if updated.run_id:
            status = {SUCCEEDED: rpb.RUN_STATUS_FINISHED, FAILED: rpb.RUN_STATUS_FAILED}.get(
                state, rpb.RUN_STATUS_KILLED
            )
            with contextlib.suppress(Exception):
                await self.registry.finish_run(updated.run_id, status)
        await self._event(
            updated,
            state,
            step=updated.step,
            total_steps=updated.total_steps,
            run_id=updated.run_id,
            error_message=error,
            model_name=updated.model_name,
            model_version=updated.model_version,
        )
        _log.info("job %s: %s%s", job.job_id, state, f" ({error})" if error else "")

    async def _prepare_run(self, job: Job) -> Job:
        if job.run_id:
            return job
        spec = job.spec
        catalog, schema, model = spec.register_to.split(".")
        experiment = await self.registry.experiment_id(
            spec.experiment or f"training-{catalog}-{schema}-{model}", f"{catalog}.{schema}", job.created_by
        )
        run_id = await self.registry.create_run(
            experiment, f"train-{model}-{job.job_id[:8]}", job.created_by, {"tessera.training.job_id": job.job_id}
        )
        params = {k: json.dumps(v) if isinstance(v, list | tuple) else v for k, v in spec.to_json().items()}
        params.update(base_version=job.base_version, train_tokens=job.preflight.train_tokens)
        await self.registry.log(run_id, params={k: str(v) for k, v in params.items()})
        updated = await self.store.update_job(job.job_id, self.name, run_id=run_id)
        if updated is None:
            raise JobLost()
        return updated

    async def _train(self, job: Job, resumed: bool) -> None:
        spec = job.spec
        job = await self._holding(job, self._prepare_run(job))
        base_dir = await self._holding(
            job,
            self.registry.download_version(
                spec.base_model,
                job.base_version,
                self.root / "models" / spec.base_model / str(job.base_version) / "full",
            ),
        )
        job_dir = self.root / "jobs" / job.job_id
        checkpoint = await self._holding(job, self._checkpoint_to_resume(job, job_dir))
        plan = Plan(
            spec=spec,
            base_dir=str(base_dir),
            train_path=str(self.root / "datasets" / f"{spec.train_version}.jsonl"),
            eval_path=str(self.root / "datasets" / f"{spec.eval_version}.jsonl") if spec.eval_dataset else "",
            output_dir=str(job_dir / "output"),
            checkpoint_dir=str(job_dir / "checkpoints"),
            resume_from=checkpoint,
            threads=self.settings.training_threads,
            checkpoint_every=spec.checkpoint_every_steps or self.settings.training_checkpoint_every_steps,
            keep_checkpoints=self.settings.training_keep_checkpoints,
        )
        job_dir.mkdir(parents=True, exist_ok=True)
        plan_path = job_dir / f"plan-{job.attempts}.json"
        plan_path.write_text(json.dumps({**plan.__dict__, "spec": spec.to_json()}))
        await self._event(job, "RESUMED" if resumed else "STARTED", step=job.checkpoint_step, run_id=job.run_id)
        outcome = await self._supervise(job, plan_path)
        if outcome["event"] == "cancelled":
            await self._finish(job, CANCELLED, step=outcome.get("step", 0))
            return
        if outcome["event"] != "done":
            raise RuntimeError(outcome.get("error") or "the training process failed")
        version = await self._holding(job, self._register(job, Path(plan.output_dir), outcome))
        await self._finish(
            job, SUCCEEDED, model_name=spec.register_to, model_version=version, step=int(outcome.get("step", 0))
        )

    async def _checkpoint_to_resume(self, job: Job, job_dir: Path) -> str:
        if not job.checkpoint_path:
            return ""
        local = Path(job.checkpoint_path)
        if local.is_file():
            return str(local)
        # Another host's worker wrote it: fetch it from the run's artifacts.
        target = job_dir / "checkpoints" / local.name
        await self.registry.download_run_file(job.run_id, f"checkpoints/{local.name}", target)
        return str(target)

    def _command(self, job: Job, plan_path: Path) -> list[str]:
        module = ["-m", "services.training.trainer", str(plan_path)]
        if job.spec.workers_per_job > 1:
            return [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={job.spec.workers_per_job}",
                *module,
            ]
        return [sys.executable, *module]

    async def _supervise(self, job: Job, plan_path: Path) -> dict:
        """Run the child; relay its lines; heartbeat; stop it on cancel or a lost lease."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        if self.settings.training_threads:
            env["OMP_NUM_THREADS"] = str(self.settings.training_threads)
        child = await asyncio.create_subprocess_exec(
            *self._command(job, plan_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            preexec_fn=_die_with_parent(signal.SIGTERM if job.spec.workers_per_job > 1 else signal.SIGKILL),
            limit=64 << 20,
        )
        state = {"step": job.checkpoint_step, "lost": False, "cancelled": False}
        stderr_tail: list[str] = []
        relay = _Relay(self, job)

        async def heartbeat() -> None:
            while child.returncode is None:
                await asyncio.sleep(self.settings.training_heartbeat_s)
                held = await self.store.heartbeat(job.job_id, self.name, self.settings.training_lease_s, state["step"])
                if held is None:
                    state["lost"] = True
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
                    return
                if held.cancel_requested and not state["cancelled"]:
                    state["cancelled"] = True
                    with contextlib.suppress(ProcessLookupError):
                        child.send_signal(signal.SIGTERM)

        async def read_stderr() -> None:
            async for line in child.stderr:
                stderr_tail.append(line.decode(errors="replace").rstrip())
                del stderr_tail[:-40]

        beating = asyncio.create_task(heartbeat())
        draining = asyncio.create_task(read_stderr())
        outcome: dict = {"event": "failed"}
        try:
            async for raw in child.stdout:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(line, dict):
                    continue
                if "step" in line:
                    state["step"] = max(state["step"], int(line["step"]))
                if line.get("event") in ("done", "cancelled", "failed"):
                    outcome = line
                await relay.handle(line)
            await child.wait()
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beating
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
            await draining
            await relay.flush()
            await asyncio.gather(*relay.uploads, return_exceptions=True)
        if state["lost"]:
            raise JobLost()
        if state["cancelled"] and outcome["event"] != "done":
            return {"event": "cancelled", "step": state["step"]}
        if outcome["event"] == "failed" and "error" not in outcome:
            outcome["error"] = f"the training process exited with {child.returncode}: " + " | ".join(stderr_tail[-5:])
        return outcome

    async def _register(self, job: Job, output: Path, outcome: dict) -> int:
        spec = job.spec
        if outcome.get("metrics"):
            step = int(outcome.get("step", 0))
            now_ms = int(time.time() * 1000)
            await self.registry.log(
                job.run_id, metrics=[(k, float(v), step, now_ms) for k, v in outcome["metrics"].items()]
            )
        description = f"{spec.method.lower()} fine-tune of {spec.base_model}/{job.base_version} on {spec.train_dataset}@{spec.train_version[:12]}"
        version = await self.registry.register(spec.register_to, job.run_id, output, description, job.created_by)
        if spec.alias:
            await self.registry.set_alias(spec.register_to, spec.alias, version)
        run = ("RUN", job.run_id)
        await self.registry.link(("DATASET", f"{spec.train_dataset}@{spec.train_version}"), run, {"role": "train"})
        if spec.eval_dataset:
            await self.registry.link(("DATASET", f"{spec.eval_dataset}@{spec.eval_version}"), run, {"role": "eval"})
        await self.registry.link(("MODEL_VERSION", f"{spec.base_model}/{job.base_version}"), run, {"role": "base"})
        return version


class _Relay:
    """The child's lines -> registry metrics (batched), job state, events and a log line every few seconds."""

    def __init__(self, worker: TrainingWorker, job: Job) -> None:
        self.worker = worker
        self.job = job
        self.pending: list[tuple[str, float, int, int]] = []
        self.last_flush = time.monotonic()
        self.last_log = 0.0
        self.last_event = 0.0
        self.uploads: list[asyncio.Task] = []

    async def handle(self, line: dict) -> None:
        w, job = self.worker, self.job
        kind = line.get("event")
        if kind == "started":
            await w.store.update_job(job.job_id, w.name, total_steps=int(line["total_steps"]))
            self.total = int(line["total_steps"])
        elif kind == "progress":
            step, now_ms = int(line["step"]), int(time.time() * 1000)
            metrics = {k: float(v) for k, v in line["metrics"].items()}
            self.pending += [(k, v, step, now_ms) for k, v in metrics.items()]
            now = time.monotonic()
            total = int(line.get("total_steps", 0))
            if now - self.last_event >= 1.0 or step == total:
                self.last_event = now
                await w._event(job, "PROGRESS", step=step, total_steps=total, metrics=metrics, run_id=job.run_id)
            if now - self.last_log >= w.settings.training_log_every_s:
                self.last_log = now
                _log.info(
                    "job %s: step %d/%d loss %.4f lr %.2e %.0f tokens/s",
                    job.job_id[:8],
                    step,
                    total,
                    metrics["loss"],
                    metrics["learning_rate"],
                    metrics["tokens_per_s"],
                )
            if now - self.last_flush >= 2.0:
                await self.flush()
        elif kind == "checkpoint":
            step, path = int(line["step"]), line["path"]
            await self.flush()
            if await w.store.update_job(job.job_id, w.name, checkpoint_step=step, checkpoint_path=path) is None:
                raise JobLost()
            uri = f"runs:/{job.run_id}/checkpoints/{Path(path).name}"
            self.uploads.append(asyncio.create_task(self._upload(Path(path))))
            seconds = float(line.get("seconds", 0.0))
            self.pending.append(("checkpoint_seconds", seconds, step, int(time.time() * 1000)))
            await w._event(
                job,
                "CHECKPOINT",
                step=step,
                checkpoint_uri=uri,
                run_id=job.run_id,
                metrics={"checkpoint_seconds": seconds},
            )

    async def _upload(self, path: Path) -> None:
        staging = path.parent / f".upload-{path.stem}"
        try:
            staging.mkdir(exist_ok=True)
            link = staging / path.name
            if not link.exists():
                os.link(path, link)
            await self.worker.registry.upload(
                rpb.ArtifactTarget(run_id=self.job.run_id), staging, prefix="checkpoints/"
            )
        except Exception:  # noqa: BLE001 - the local copy still resumes the job on this host
            _log.warning("job %s: uploading checkpoint %s failed", self.job.job_id, path.name, exc_info=True)
        finally:
            for item in staging.glob("*"):
                item.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                staging.rmdir()

    async def flush(self) -> None:
        self.last_flush = time.monotonic()
        if self.pending:
            batch, self.pending = self.pending, []
            try:
                await self.worker.registry.log(self.job.run_id, metrics=batch)
            except Exception:  # noqa: BLE001 - metrics are best effort; the job goes on
                _log.warning("job %s: logging %d metric points failed", self.job.job_id, len(batch))
        for task in [t for t in self.uploads if t.done()]:
            self.uploads.remove(task)


def main() -> None:
    settings = load(TrainingSettings)
    telemetry.setup_tracing(settings.service_name + "-worker", settings.otlp_endpoint)
    run_service(TrainingWorker(settings), settings.log_level)


if __name__ == "__main__":
    main()
