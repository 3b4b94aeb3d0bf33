"""Registry events serving reacts to: alias moves (switch versions) and grant changes (forget cached answers)."""

from __future__ import annotations

import logging

from tessera.events.v1 import registry_pb2

from services.common.kafka_consumer import ConsumerLoop, Record
from services.common.kafka_producer import EventProducer
from services.serving.access import ExecuteChecker
from services.serving.endpoints import EndpointControl

_log = logging.getLogger(__name__)
_Event = registry_pb2.RegistryEvent


class RegistryEventFollower:
    def __init__(
        self,
        endpoints: EndpointControl,
        access: ExecuteChecker,
        producer: EventProducer,
        *,
        bootstrap: str,
        topic: str,
        group_id: str,
    ) -> None:
        self._endpoints = endpoints
        self._access = access
        # Only what happens from now on matters: endpoints resolve their aliases when they load.
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
            if event.type == _Event.ALIAS_SET:
                await self._endpoints.on_alias_set(event.model_name, event.alias, event.version)
            elif event.type in (_Event.GRANT_CHANGED, _Event.OWNER_CHANGED):
                self._access.forget()
