"""`python -m services.retrieval.connector_cli spec.json [--once]`: run a source-table connector on its own.

It publishes with the service token (`TESSERA_SERVICE_TOKEN`, never a flag that `ps` shows);
the sync consumer applies the records only if that principal may MODIFY the
index's schema.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from services.common.config import load
from services.common.db import Database, migrate
from services.common.kafka_producer import EventProducer
from services.common.lifecycle import configure_logging
from services.retrieval.connector import ConnectorSpec, SourceTableConnector
from services.retrieval.settings import RetrievalSettings
from services.retrieval.store import MIGRATIONS, IndexStore

_log = logging.getLogger(__name__)


async def run(spec_path: Path, once: bool) -> None:
    settings = load(RetrievalSettings)
    db = await Database(settings.resolved_pg_dsn(), settings.retrieval_schema).open()
    await migrate(db, MIGRATIONS)
    producer = EventProducer(settings.kafka_bootstrap, client_id="retrieval-connector")
    connector = SourceTableConnector(
        ConnectorSpec.from_json(spec_path),
        IndexStore(db),
        producer,
        settings.retrieval_sync_topic,
        settings.service_token,
    )
    try:
        await connector.install_delete_capture()
        if once:
            upserts, deletes = await connector.sync_once()
            _log.info("published %d upserts and %d deletes", upserts, deletes)
        else:
            await connector.run(settings.retrieval_connector_poll_s)
    finally:
        producer.close()
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Sync a PostgreSQL table into a retrieval index through Kafka")
    parser.add_argument("spec", type=Path, help="a JSON ConnectorSpec")
    parser.add_argument("--once", action="store_true", help="publish what changed since the last run, then exit")
    arguments = parser.parse_args()
    configure_logging()
    asyncio.run(run(arguments.spec, arguments.once))


if __name__ == "__main__":
    main()
