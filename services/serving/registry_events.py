"""Registry events serving reacts to.

- SECURABLE_REGISTERED/CHANGED/UNREGISTERED of an ENDPOINT: reload that
  endpoint from the store (every replica, the one that made the change too;
  reloading is idempotent). The event only says *which* endpoint to look at:
  what runs comes from PostgreSQL.
- ALIAS_SET/ALIAS_DELETED/MODEL_VERSION_READY: re-resolve the model's alias
  routes through the registry (only READY versions load); the event's version
  is never taken on faith.
- Anything that can change a privilege answer: drop the cached answers.
"""

from __future__ import annotations

import logging

from tessera.events.v1 import registry_pb2

from services.common.kafka_consumer import ConsumerLoop, Record
from services.common.kafka_producer import EventProducer
from services.common.registry_privileges import RegistryPrivileges
from services.serving.endpoints import ENDPOINT, EndpointControl

_log = logging.getLogger(__name__)
_Event = registry_pb2.RegistryEvent

_ENDPOINT_CHANGES = frozenset({_Event.SECURABLE_REGISTERED, _Event.SECURABLE_CHANGED, _Event.SECURABLE_UNREGISTERED})
_ALIAS_CHANGES = frozenset({_Event.ALIAS_SET, _Event.ALIAS_DELETED, _Event.MODEL_VERSION_READY})
# The registry writes securable types by name ("ENDPOINT"); the enum spelling is accepted too.
_ENDPOINT_TYPES = frozenset({ENDPOINT, f"SECURABLE_TYPE_{ENDPOINT}"})


class RegistryEventFollower:
    def __init__(
        self,
        endpoints: EndpointControl,
        privileges: RegistryPrivileges,
        producer: EventProducer,
        *,
        bootstrap: str,
        topic: str,
        group_id: str,
    ) -> None:
        self._endpoints = endpoints
        self._privileges = privileges
        # Only what happens from now on matters: endpoints load from the store and resolve aliases at start.
        self.loop = ConsumerLoop(
            bootstrap=bootstrap,
            group_id=group_id,
            topics=[topic],
            message_type=_Event,
            handler=self._handle,
            dlq_producer=producer,
            **{"auto.offset.reset": "latest"},
        )

    async def run(self) -> None:
        await self.loop.run()

    def stop(self) -> None:
        self.loop.stop()

    async def _handle(self, records: list[Record[registry_pb2.RegistryEvent]]) -> None:
        for record in records:
            event = record.value
            self._privileges.on_registry_event(event)
            if event.type in _ENDPOINT_CHANGES and event.grant.securable_type in _ENDPOINT_TYPES:
                await self._endpoints.apply(event.grant.securable_name)
            elif event.type in _ALIAS_CHANGES:
                await self._endpoints.refresh_aliases(event.model_name)
