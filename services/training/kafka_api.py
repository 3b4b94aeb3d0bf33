"""Kafka: job wake-ups to `tessera.training.jobs` (workers consume them in worker.py)."""

from __future__ import annotations

from tessera.events.v1 import training_pb2 as events_pb

from services.common.kafka_producer import EventProducer


class JobQueue:
    """Tells the workers a job is waiting; the job itself is already in PostgreSQL."""

    def __init__(self, producer: EventProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def __call__(self, job_id: str, requested_by: str) -> None:
        message = events_pb.TrainingJob(job_id=job_id, requested_by=requested_by)
        message.queued_at.GetCurrentTime()
        await self.producer.send(self.topic, message, key=job_id)
