"""Registry events (`tessera.events.v1.RegistryEvent`) as the outbox stores them.

The core builds an event for each change it commits; the outbox table keeps the
serialized message until the publisher has it acknowledged by Kafka.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from tessera.events.v1 import registry_pb2 as pb

Type = pb.RegistryEvent.Type


@dataclass(frozen=True)
class PendingEvent:
    """An event to write to the outbox: its Kafka key keeps one model's events in order."""

    key: str
    message: pb.RegistryEvent

    def payload(self) -> bytes:
        return self.message.SerializeToString()


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


def model_event(
    kind: int,
    actor: str,
    model_name: str,
    *,
    version: int = 0,
    alias: str = "",
    previous_version: int = 0,
    source_uri: str = "",
    storage_location: str = "",
    run_id: str = "",
    status_message: str = "",
    new_model_name: str = "",
) -> PendingEvent:
    return PendingEvent(
        key=model_name,
        message=pb.RegistryEvent(
            type=kind,
            occurred_at=_now(),
            actor=actor,
            model_name=model_name,
            version=version,
            alias=alias,
            previous_version=previous_version,
            source_uri=source_uri,
            storage_location=storage_location,
            run_id=run_id,
            status_message=status_message,
            new_model_name=new_model_name,
        ),
    )


def grant_event(
    actor: str, securable_type: str, securable_name: str, principal: str, added: list[str], removed: list[str]
) -> PendingEvent:
    return PendingEvent(
        key=securable_name,
        message=pb.RegistryEvent(
            type=Type.GRANT_CHANGED,
            occurred_at=_now(),
            actor=actor,
            model_name=securable_name,
            grant=pb.GrantChange(
                securable_type=securable_type,
                securable_name=securable_name,
                principal=principal,
                added=added,
                removed=removed,
            ),
        ),
    )


def owner_event(actor: str, securable_type: str, securable_name: str, new_owner: str) -> PendingEvent:
    return PendingEvent(
        key=securable_name,
        message=pb.RegistryEvent(
            type=Type.OWNER_CHANGED,
            occurred_at=_now(),
            actor=actor,
            model_name=securable_name,
            grant=pb.GrantChange(securable_type=securable_type, securable_name=securable_name, principal=new_owner),
        ),
    )


def securable_event(kind: int, actor: str, securable_type: str, securable_name: str, owner: str = "") -> PendingEvent:
    """SECURABLE_REGISTERED (principal: the owner), SECURABLE_CHANGED or SECURABLE_UNREGISTERED."""
    return PendingEvent(
        key=securable_name,
        message=pb.RegistryEvent(
            type=kind,
            occurred_at=_now(),
            actor=actor,
            model_name=securable_name,
            grant=pb.GrantChange(securable_type=securable_type, securable_name=securable_name, principal=owner),
        ),
    )
