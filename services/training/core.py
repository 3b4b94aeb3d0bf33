"""The training service's logic: governed datasets, pre-flight, and the job lifecycle.

Every call takes the caller's Principal. Grants live in the registry: a dataset
is the securable DATASET `catalog.schema.dataset` (SELECT reads it and trains on
it, MODIFY adds versions; creating one needs CREATE_MODEL on the schema); a job
needs SELECT on its datasets, EXECUTE on the base model and the right to add a
version to `register_to` (MODIFY on it, or CREATE_MODEL on its schema when it
does not exist yet).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from services.common.auth import Principal
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.names import object_name
from services.common.paging import Page, decode_token, encode_token, page_size
from services.common.registry_privileges import RegistryPrivileges
from services.training import dataset_rows
from services.training.entities import (
    FINAL_STATES,
    METHODS,
    QUEUED,
    SCHEDULES,
    TASK_FORMAT,
    TASKS,
    Dataset,
    DatasetVersion,
    Job,
    JobEvent,
    JobSpec,
    Preflight,
)
from services.training.registry_client import TOKENIZER_FILES, TrainingRegistry
from services.training.settings import TrainingSettings
from services.training.store import TrainingStore

_log = logging.getLogger(__name__)
_VERSION = re.compile(r"[0-9a-f]{64}")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,255}")
_LORA_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")


def warm_imports() -> None:
    """Import what pre-flight uses before the first request: transformers' modules load lazily, and
    two threads importing one for the first time at once can see it half-initialised (ImportError).
    Seconds, once per process (call it off the event loop)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401


class TrainingCore:
    def __init__(
        self,
        settings: TrainingSettings,
        store: TrainingStore,
        privileges: RegistryPrivileges,
        registry: TrainingRegistry,
        queue,
    ) -> None:
        self.settings = settings
        self.store = store
        self.privileges = privileges
        self.registry = registry
        # `queue(job_id, requested_by)` wakes the workers (a record on tessera.training.jobs).
        self._queue = queue
        self.root = settings.root()

    # -- datasets -------------------------------------------------------------

    def dataset_path(self, version: str) -> Path:
        return self.root / "datasets" / f"{version}.jsonl"

    async def create_dataset(self, principal: Principal, full_name: str, description: str = "") -> Dataset:
        catalog, schema, _ = object_name(full_name, "dataset")
        if len(description) > 4096:
            raise InvalidArgument("description longer than 4096 characters", field="description")
        await self.privileges.require(principal, "SCHEMA", f"{catalog}.{schema}", "CREATE_MODEL")
        await self.privileges.register("DATASET", full_name, principal.name)
        try:
            return await self.store.insert_dataset(full_name, description, principal.name)
        except Exception:
            await self.privileges.unregister("DATASET", full_name, principal.name)
            raise

    async def _readable(self, principal: Principal, full_name: str, privilege: str = "SELECT") -> Dataset:
        object_name(full_name, "dataset")
        await self.privileges.require(principal, "DATASET", full_name, privilege)
        dataset = await self.store.get_dataset(full_name)
        if dataset is None:
            raise NotFound(f"dataset {full_name} does not exist")
        return dataset

    async def describe_dataset(self, principal: Principal, full_name: str) -> Dataset:
        return await self._readable(principal, full_name)

    async def dataset_version(self, principal: Principal, full_name: str, version: str) -> DatasetVersion:
        await self._readable(principal, full_name)
        if not _VERSION.fullmatch(version or ""):
            raise InvalidArgument(f"invalid dataset version {version[:80]!r}: a sha256 in hex", field="version")
        found = await self.store.get_version(full_name, version)
        if found is None:
            raise NotFound(f"dataset {full_name} has no version {version}")
        return found

    async def read_version(self, principal: Principal, full_name: str, version: str) -> AsyncIterator[bytes]:
        await self.dataset_version(principal, full_name, version)
        with self.dataset_path(version).open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    async def upload_version(
        self, principal: Principal, full_name: str, chunks: AsyncIterator[bytes]
    ) -> DatasetVersion:
        await self._readable(principal, full_name, "MODIFY")
        limit = self.settings.training_max_dataset_bytes
        received: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise InvalidArgument(f"the upload is larger than {limit} bytes", field="data")
            received.append(chunk)
        return await self._add_version(principal, full_name, received, "upload")

    async def _add_version(
        self, principal: Principal, full_name: str, chunks: list[bytes], source: str
    ) -> DatasetVersion:
        parsed = await asyncio.to_thread(
            dataset_rows.parse_jsonl,
            dataset_rows.split_lines(chunks),
            max_rows=self.settings.training_max_rows,
            max_row_bytes=self.settings.training_max_row_bytes,
        )
        if parsed.problems:
            raise InvalidArgument("the rows cannot be a dataset version: " + "; ".join(parsed.problems), field="data")
        data = dataset_rows.canonical(parsed.rows)
        version = dataset_rows.content_hash(data)
        path = self.dataset_path(version)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                tmp.write(data)
            Path(tmp.name).replace(path)
        stored = await self.store.insert_version(
            DatasetVersion(
                dataset=full_name,
                version=version,
                format=parsed.format,
                row_count=len(parsed.rows),
                size_bytes=len(data),
                columns=parsed.columns,
                source=source,
                created_by=principal.name,
            )
        )
        if source.startswith("inference_table:"):
            endpoint = source.split(":", 1)[1]
            await self.registry.link(
                ("SERVING_ENDPOINT", endpoint), ("DATASET", f"{full_name}@{version}"), {"source": "inference_table"}
            )
        return stored

    async def version_from_inference_table(
        self,
        principal: Principal,
        full_name: str,
        endpoint: str,
        start: datetime,
        end: datetime,
        status: str,
        fmt: str,
        records,
    ) -> DatasetVersion:
        """A version from an endpoint's logged requests in [start, end) (`records` reads monitoring's API as the caller)."""
        await self._readable(principal, full_name, "MODIFY")
        if not endpoint or len(endpoint) > 255:
            raise InvalidArgument("endpoint is required (max 255 characters)", field="endpoint")
        if end <= start:
            raise InvalidArgument("end_time must be after start_time", field="end_time")
        if fmt not in ("CHAT", "EVALUATION"):
            raise InvalidArgument("format must be ROW_FORMAT_CHAT or ROW_FORMAT_EVALUATION", field="format")
        rows: list[bytes] = []
        async for record in records(principal, endpoint, start, end, status):
            row = inference_row(record, fmt)
            if row is not None:
                rows.append(json.dumps(row).encode() + b"\n")
            if len(rows) > self.settings.training_max_rows:
                raise InvalidArgument(
                    f"more than {self.settings.training_max_rows} records in the range", field="end_time"
                )
        if not rows:
            raise FailedPrecondition(f"endpoint {endpoint} logged no usable request in that range")
        return await self._add_version(principal, full_name, rows, f"inference_table:{endpoint}")

    # -- jobs -----------------------------------------------------------------

    def check_spec(self, spec: JobSpec) -> JobSpec:
        """Bound every client-chosen value before any work is done on it."""
        s = self.settings
        object_name(spec.base_model, "base_model")
        object_name(spec.register_to, "register_to")
        object_name(spec.train_dataset, "train_dataset")
        if spec.eval_dataset:
            object_name(spec.eval_dataset, "eval_dataset")
        for field, value in (
            ("train_dataset.version", spec.train_version),
            ("eval_dataset.version", spec.eval_version),
        ):
            if (value or field.startswith("train")) and not _VERSION.fullmatch(value or ""):
                raise InvalidArgument(f"{field} must be a dataset version (sha256 hex)", field=field)
        if bool(spec.base_version) == bool(spec.base_alias):
            raise InvalidArgument("give the base model's version or its alias (one of them)", field="base_version")
        if spec.base_alias and not _ALIAS.fullmatch(spec.base_alias):
            raise InvalidArgument("invalid base_alias", field="base_alias")
        if spec.alias and not _ALIAS.fullmatch(spec.alias):
            raise InvalidArgument("invalid alias", field="alias")
        if spec.task not in TASKS:
            raise InvalidArgument(f"task must be one of {', '.join(TASKS)}", field="task")
        if spec.method not in METHODS:
            raise InvalidArgument(f"method must be one of {', '.join(METHODS)}", field="method")
        if spec.lr_schedule not in SCHEDULES:
            raise InvalidArgument(f"lr_schedule must be one of {', '.join(SCHEDULES)}", field="lr_schedule")
        if sum(1 for d in (spec.epochs, spec.steps, spec.tokens) if d) != 1:
            raise InvalidArgument("give exactly one duration: epochs, steps or tokens", field="duration")
        bounds = (
            ("epochs", spec.epochs, 0, s.training_max_epochs),
            ("steps", spec.steps, 0, s.training_max_steps),
            (
                "tokens",
                spec.tokens,
                0,
                s.training_max_steps * s.training_max_batch_size * s.training_max_sequence_length,
            ),
            ("batch_size", spec.batch_size, 1, s.training_max_batch_size),
            ("sequence_length", spec.sequence_length, 8, s.training_max_sequence_length),
            ("workers_per_job", spec.workers_per_job, 1, s.training_max_workers_per_job),
            ("warmup_steps", spec.warmup_steps, 0, s.training_max_steps),
            ("checkpoint_every_steps", spec.checkpoint_every_steps, 0, s.training_max_steps),
            ("eval_every_steps", spec.eval_every_steps, 0, s.training_max_steps),
            ("lora.rank", spec.lora_rank, 1, 1024),
            ("seed", spec.seed, 0, 2**31 - 1),
        )
        for field, value, low, high in bounds:
            if not low <= value <= high:
                raise InvalidArgument(f"{field} must be between {low} and {high}, not {value}", field=field)
        if not 0 < spec.learning_rate <= 1:
            raise InvalidArgument("learning_rate must be in (0, 1]", field="learning_rate")
        if not 0 <= spec.lora_dropout < 1 or not 0 <= spec.weight_decay <= 1 or not 0 < spec.lora_alpha <= 1e4:
            raise InvalidArgument(
                "lora.dropout in [0, 1), lora.alpha in (0, 1e4], weight_decay in [0, 1]", field="lora"
            )
        if not 0 < spec.max_grad_norm <= 1e6:
            raise InvalidArgument("max_grad_norm must be in (0, 1e6]", field="max_grad_norm")
        if len(spec.lora_target_modules) > 32 or not all(_LORA_TARGET.fullmatch(m) for m in spec.lora_target_modules):
            raise InvalidArgument("lora.target_modules: at most 32 module names", field="lora.target_modules")
        if len(spec.experiment) > 256:
            raise InvalidArgument("experiment name longer than 256 characters", field="experiment")
        return spec

    async def _authorize(self, principal: Principal, spec: JobSpec) -> None:
        await self.privileges.require(principal, "DATASET", spec.train_dataset, "SELECT")
        if spec.eval_dataset:
            await self.privileges.require(principal, "DATASET", spec.eval_dataset, "SELECT")
        await self.privileges.require(principal, "REGISTERED_MODEL", spec.base_model, "EXECUTE")
        try:
            await self.privileges.require(principal, "REGISTERED_MODEL", spec.register_to, "MODIFY")
        except NotFound:
            catalog, schema, _ = object_name(spec.register_to, "register_to")
            await self.privileges.require(principal, "SCHEMA", f"{catalog}.{schema}", "CREATE_MODEL")

    async def preflight(self, principal: Principal, spec: JobSpec) -> tuple[Preflight, int]:
        """The pre-flight report and the base version the spec resolves to; refuses on missing grants."""
        self.check_spec(spec)
        await self._authorize(principal, spec)
        base = await self.registry.resolve_version(spec.base_model, spec.base_version, spec.base_alias)
        train = await self.store.get_version(spec.train_dataset, spec.train_version)
        if train is None:
            raise NotFound(f"dataset {spec.train_dataset} has no version {spec.train_version}")
        problems: list[str] = []
        if train.format != TASK_FORMAT[spec.task]:
            problems.append(
                f"task {spec.task} trains on {TASK_FORMAT[spec.task].lower()} rows; {spec.train_dataset} holds {train.format.lower()} rows"
            )
        if spec.eval_dataset:
            evaluation = await self.store.get_version(spec.eval_dataset, spec.eval_version)
            if evaluation is None:
                raise NotFound(f"dataset {spec.eval_dataset} has no version {spec.eval_version}")
            if evaluation.format != train.format:
                problems.append(
                    f"the eval dataset holds {evaluation.format.lower()} rows, the train dataset {train.format.lower()}"
                )
        files = await self.registry.download_version(
            spec.base_model,
            base.version,
            self.root / "models" / spec.base_model / str(base.version) / "tokenizer",
            only=TOKENIZER_FILES,
        )
        if problems:
            return Preflight(problems=tuple(problems), train_rows=train.row_count), base.version
        report = await asyncio.to_thread(self._measure, spec, files, self.dataset_path(train.version))
        return report, base.version

    def _measure(self, spec: JobSpec, base_dir: Path, rows_path: Path) -> Preflight:
        from transformers import AutoTokenizer  # imported at start (warm_imports): a failure here is ours

        from services.training import estimates
        from services.training.examples import build_examples, end_of_turn_ids
        from services.training.trainer import read_rows, total_steps

        try:
            tokenizer = AutoTokenizer.from_pretrained(base_dir)
        except Exception as exc:  # noqa: BLE001 - the base model's files are user content
            return Preflight(problems=(f"the base model's tokenizer does not load: {exc.__class__.__name__}",))
        generation = base_dir / "generation_config.json"
        eos = json.loads(generation.read_text()).get("eos_token_id") if generation.exists() else None
        eot = end_of_turn_ids(tokenizer, eos if isinstance(eos, list) else [eos] if eos is not None else [])
        rows = read_rows(str(rows_path))
        built = build_examples(tokenizer, rows, spec.task, spec.sequence_length, eot)
        steps = total_steps(spec, built.examples) if built.examples else 0
        if steps > self.settings.training_max_steps:
            built.problems.append(f"{steps} steps: more than {self.settings.training_max_steps}")
        estimate = estimates.estimate(base_dir, spec, built.examples, steps, self.settings.training_assumed_flops)
        return Preflight(
            problems=tuple(built.problems),
            train_rows=len(rows),
            train_tokens=built.tokens,
            trained_tokens=built.trained_tokens,
            total_steps=steps,
            estimated_seconds=estimate.seconds,
            estimated_peak_memory_bytes=estimate.peak_memory_bytes,
            base_parameters=estimate.parameters,
            trainable_parameters=estimate.trainable,
        )

    async def submit(self, principal: Principal, spec: JobSpec) -> Job:
        report, base_version = await self.preflight(principal, spec)
        if report.problems:
            raise InvalidArgument("pre-flight refused the job: " + "; ".join(report.problems), field="spec")
        job = await self.store.insert_job(
            Job(
                job_id=uuid.uuid4().hex,
                spec=spec,
                state=QUEUED,
                created_by=principal.name,
                base_version=base_version,
                preflight=report,
            )
        )
        try:
            await self._queue(job.job_id, principal.name)
        except Exception:  # noqa: BLE001 - the job is queued in PostgreSQL; idle workers find it by polling
            _log.warning("could not wake the workers for job %s; they will find it on their next poll", job.job_id)
        return job

    async def _visible_job(self, principal: Principal, job_id: str) -> Job:
        if not job_id or len(job_id) > 64:
            raise InvalidArgument("job_id is required (max 64 characters)", field="job_id")
        job = await self.store.get_job(job_id)
        if job is None or not await self._may_see(principal, job):
            raise NotFound(f"job {job_id} does not exist")
        return job

    async def _may_see(self, principal: Principal, job: Job) -> bool:
        if job.created_by == principal.name or not self.privileges.enforce:
            return True
        try:
            return await self.privileges.allowed(principal, "REGISTERED_MODEL", job.spec.register_to, "MANAGE")
        except NotFound:
            return False

    async def get_job(self, principal: Principal, job_id: str) -> Job:
        return await self._visible_job(principal, job_id)

    async def list_jobs(self, principal: Principal, register_to: str, size: int, token: str) -> Page[Job]:
        if register_to:
            object_name(register_to, "register_to")
        limit = page_size(size)
        offset = decode_token(token) if token else 0
        jobs = await self.store.list_jobs(None if register_to else principal.name, register_to, offset, limit + 1)
        visible = [j for j in jobs[:limit] if await self._may_see(principal, j)]
        return Page(visible, encode_token(offset + limit) if len(jobs) > limit else "")

    async def cancel(self, principal: Principal, job_id: str) -> Job:
        job = await self._visible_job(principal, job_id)
        if job.created_by != principal.name and self.privileges.enforce:
            await self.privileges.require(principal, "REGISTERED_MODEL", job.spec.register_to, "MANAGE")
        if job.state in FINAL_STATES:
            raise FailedPrecondition(f"job {job_id} already ended ({job.state})")
        cancelled = await self.store.request_cancel(job_id)
        if cancelled is None:
            raise FailedPrecondition(f"job {job_id} already ended")
        if cancelled.state == "CANCELLED":
            await self.store.add_event(JobEvent(seq=0, job_id=job_id, type="CANCELLED"))
        return cancelled

    async def events(self, principal: Principal, job_id: str, poll_s: float = 0.5) -> AsyncIterator[JobEvent]:
        """The job's events so far, then new ones until it ends."""
        await self._visible_job(principal, job_id)
        seq = 0
        while True:
            batch = await self.store.events_after(job_id, seq)
            for event in batch:
                seq = event.seq
                yield event
                if event.type in FINAL_STATES:
                    return
            if not batch:
                job = await self.store.get_job(job_id)
                if job is None or (job.state in FINAL_STATES and not await self.store.events_after(job_id, seq)):
                    return
                await asyncio.sleep(poll_s)

    async def metrics_snapshot(self) -> dict:
        """Jobs by state and the latest figures of running and recently ended jobs (for a Prometheus scrape)."""
        s = self.settings
        states = await self.store.jobs_by_state()
        jobs = await self.store.job_figures(s.training_metrics_recent_s, s.training_metrics_max_jobs)
        return {"states": states, "jobs": jobs}


def inference_row(record, fmt: str) -> dict | None:
    """One logged request as a chat row (its conversation and the answer) or an evaluation row."""
    from google.protobuf.json_format import MessageToDict

    inputs = MessageToDict(record.inputs) if record.HasField("inputs") else {}
    outputs = MessageToDict(record.outputs) if record.HasField("outputs") else {}
    answer = outputs.get("text")
    if not isinstance(answer, str):
        return None
    if isinstance(inputs.get("messages"), list):
        messages = [
            {"role": str(m.get("role", "user")), "content": str(m.get("content", ""))} for m in inputs["messages"]
        ]
    elif isinstance(inputs.get("prompt"), str):
        messages = [{"role": "user", "content": inputs["prompt"]}]
    else:
        return None
    if fmt == "EVALUATION":
        request = inputs["prompt"] if "prompt" in inputs else {"messages": messages}
        return {"request": request, "expected_response": answer}
    return {"messages": [*messages, {"role": "assistant", "content": answer}]}
