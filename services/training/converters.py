"""Proto <-> entities for the training API."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from tessera.events.v1 import training_pb2 as events_pb
from tessera.training.v1 import training_pb2 as pb

from services.training.entities import Dataset, DatasetVersion, Job, JobEvent, JobSpec, Preflight

_FORMATS = {
    "CHAT": pb.ROW_FORMAT_CHAT,
    "PROMPT_RESPONSE": pb.ROW_FORMAT_PROMPT_RESPONSE,
    "TEXT": pb.ROW_FORMAT_TEXT,
    "EVALUATION": pb.ROW_FORMAT_EVALUATION,
}
_FORMAT_NAMES = {v: k for k, v in _FORMATS.items()}


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def row_format(value: int) -> str:
    return _FORMAT_NAMES.get(value, "CHAT")


def dataset_version(v: DatasetVersion) -> pb.DatasetVersion:
    return pb.DatasetVersion(
        dataset=v.dataset,
        version=v.version,
        format=_FORMATS[v.format],
        row_count=v.row_count,
        size_bytes=v.size_bytes,
        columns=v.columns,
        source=v.source,
        created_by=v.created_by,
        created_at=_ts(v.created_at),
    )


def dataset(d: Dataset) -> pb.Dataset:
    return pb.Dataset(
        full_name=d.full_name,
        description=d.description,
        owner=d.owner,
        created_at=_ts(d.created_at),
        versions=[dataset_version(v) for v in d.versions],
    )


def job_spec(spec: pb.JobSpec) -> JobSpec:
    duration = spec.WhichOneof("duration")
    lora = spec.lora
    return JobSpec(
        base_model=spec.base_model,
        base_version=spec.base_version,
        base_alias=spec.base_alias,
        train_dataset=spec.train_dataset.dataset,
        train_version=spec.train_dataset.version,
        eval_dataset=spec.eval_dataset.dataset,
        eval_version=spec.eval_dataset.version,
        task=pb.Task.Name(spec.task).removeprefix("TASK_") if spec.task else "CHAT",
        method=pb.Method.Name(spec.method).removeprefix("METHOD_") if spec.method else "LORA",
        lora_rank=lora.rank or 16,
        lora_alpha=lora.alpha or 2.0 * (lora.rank or 16),
        lora_dropout=lora.dropout,
        lora_target_modules=tuple(lora.target_modules),
        epochs=spec.epochs if duration == "epochs" else 0,
        steps=spec.steps if duration == "steps" else 0,
        tokens=spec.tokens if duration == "tokens" else 0,
        learning_rate=spec.learning_rate or 1e-4,
        lr_schedule=spec.lr_schedule or "linear",
        warmup_steps=spec.warmup_steps,
        batch_size=spec.batch_size or 8,
        sequence_length=spec.sequence_length or 512,
        seed=spec.seed,
        register_to=spec.register_to,
        alias=spec.alias,
        experiment=spec.experiment,
        workers_per_job=spec.workers_per_job or 1,
        checkpoint_every_steps=spec.checkpoint_every_steps,
        eval_every_steps=spec.eval_every_steps,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm or 1.0,
    )


def job_spec_proto(spec: JobSpec) -> pb.JobSpec:
    out = pb.JobSpec(
        base_model=spec.base_model,
        base_version=spec.base_version,
        base_alias=spec.base_alias,
        train_dataset=pb.DatasetRef(dataset=spec.train_dataset, version=spec.train_version),
        task=pb.Task.Value("TASK_" + spec.task),
        method=pb.Method.Value("METHOD_" + spec.method),
        lora=pb.LoraConfig(
            rank=spec.lora_rank,
            alpha=spec.lora_alpha,
            dropout=spec.lora_dropout,
            target_modules=spec.lora_target_modules,
        ),
        learning_rate=spec.learning_rate,
        lr_schedule=spec.lr_schedule,
        warmup_steps=spec.warmup_steps,
        batch_size=spec.batch_size,
        sequence_length=spec.sequence_length,
        seed=spec.seed,
        register_to=spec.register_to,
        alias=spec.alias,
        experiment=spec.experiment,
        workers_per_job=spec.workers_per_job,
        checkpoint_every_steps=spec.checkpoint_every_steps,
        eval_every_steps=spec.eval_every_steps,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
    )
    if spec.eval_dataset:
        out.eval_dataset.CopyFrom(pb.DatasetRef(dataset=spec.eval_dataset, version=spec.eval_version))
    if spec.epochs:
        out.epochs = spec.epochs
    elif spec.steps:
        out.steps = spec.steps
    elif spec.tokens:
        out.tokens = spec.tokens
    return out


def preflight(p: Preflight) -> pb.Preflight:
    return pb.Preflight(
        problems=p.problems,
        train_rows=p.train_rows,
        train_tokens=p.train_tokens,
        trained_tokens=p.trained_tokens,
        total_steps=p.total_steps,
        estimated_seconds=p.estimated_seconds,
        estimated_peak_memory_bytes=p.estimated_peak_memory_bytes,
        base_parameters=p.base_parameters,
        trainable_parameters=p.trainable_parameters,
    )


def job(j: Job) -> pb.Job:
    return pb.Job(
        job_id=j.job_id,
        spec=job_spec_proto(j.spec),
        state=pb.JobState.Value("JOB_STATE_" + j.state),
        run_id=j.run_id,
        error_message=j.error_message,
        created_by=j.created_by,
        created_at=_ts(j.created_at),
        updated_at=_ts(j.updated_at),
        step=j.step,
        total_steps=j.total_steps,
        checkpoint_step=j.checkpoint_step,
        attempts=j.attempts,
        worker=j.worker,
        model_name=j.model_name,
        model_version=j.model_version,
        preflight=preflight(j.preflight),
        base_version=j.base_version,
    )


def event(e: JobEvent) -> events_pb.TrainingEvent:
    return events_pb.TrainingEvent(
        event_id=f"{e.job_id}:{e.seq}",
        job_id=e.job_id,
        type=events_pb.TrainingEvent.Type.Value(e.type),
        run_id=e.run_id,
        step=e.step,
        total_steps=e.total_steps,
        metrics=e.metrics,
        checkpoint_uri=e.checkpoint_uri,
        model_name=e.model_name,
        model_version=e.model_version,
        error_message=e.error_message,
        at=_ts(e.at),
        worker=e.worker,
    )
