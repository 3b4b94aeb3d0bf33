"""Session fixtures: one real Kafka and one real PostgreSQL for the whole run."""

from __future__ import annotations

import uuid

import pytest

from services.common import kafka_admin
from tests import infrastructure


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    infra = infrastructure.start_kafka()
    print(f"\nkafka: {infra.address} ({infra.how})")
    yield infra.address
    infra.stop()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    infra = infrastructure.start_postgres()
    print(f"\npostgres: {infra.address} ({infra.how})")
    yield infra.address
    infra.stop()


@pytest.fixture
def unique() -> str:
    """A short random suffix for names that must not collide across tests and runs."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def fresh_topic(kafka_bootstrap: str, unique: str) -> str:
    """A new topic (and its DLQ) for one test."""
    name = f"test.{unique}"
    kafka_admin.ensure_topics(kafka_bootstrap, [name, name + ".dlq"], partitions=1)
    return name
