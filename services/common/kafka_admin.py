"""Topic administration: `python -m services.common.kafka_admin ping|create-topics|list`.

The broker scripts and the test fixtures use it, so the set of topics a fresh
cluster gets is the one `topics.py` declares. Brokers run with topic
auto-creation off, so this is the only way a topic comes to exist.

Settings (the command line reads them): TESSERA_KAFKA_REPLICATION_FACTOR
(-1: the broker's `default.replication.factor`) and TESSERA_KAFKA_DLQ_RETENTION_MS
(dead-letter topics keep records longer than their source topic).
"""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from services.common import config
from services.common import topics as topic_names

_DEFAULTS = config.CommonSettings()


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})


def ping(bootstrap: str, timeout: float = 5.0) -> int:
    """Number of brokers the cluster reports; raises if nobody answers."""
    metadata = admin(bootstrap).list_topics(timeout=timeout)
    return len(metadata.brokers)


def _topic_config(name: str, dlq_retention_ms: int, min_insync_replicas: int) -> dict[str, str]:
    config = {"retention.ms": str(dlq_retention_ms)} if name.endswith(topic_names.DLQ_SUFFIX) else {}
    if min_insync_replicas > 0:
        config["min.insync.replicas"] = str(min_insync_replicas)
    return config


def ensure_topics(
    bootstrap: str,
    names: list[str] | tuple[str, ...],
    partitions: int = 3,
    *,
    replication_factor: int = _DEFAULTS.kafka_replication_factor,
    dlq_retention_ms: int = _DEFAULTS.kafka_dlq_retention_ms,
    min_insync_replicas: int = _DEFAULTS.kafka_min_insync_replicas,
) -> list[str]:
    """Create the topics that do not exist yet; returns those created. Idempotent.

    `replication_factor` -1 leaves it to the broker; `<topic>.dlq` topics keep records for `dlq_retention_ms`;
    `min_insync_replicas` > 0 sets `min.insync.replicas` (with acks=all, how many copies a write needs)."""
    client = admin(bootstrap)
    existing = set(client.list_topics(timeout=10).topics)
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    futures = client.create_topics(
        [
            NewTopic(
                n,
                num_partitions=partitions,
                replication_factor=replication_factor,
                config=_topic_config(n, dlq_retention_ms, min_insync_replicas),
            )
            for n in missing
        ],
        operation_timeout=30,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != exc.args[0].TOPIC_ALREADY_EXISTS:
                raise
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka_admin", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["ping", "create-topics", "list"])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args(argv)
    settings = config.load(config.CommonSettings)
    if args.command == "ping":
        print(f"{ping(args.bootstrap)} broker(s) answer at {args.bootstrap}")
    elif args.command == "create-topics":
        created = ensure_topics(
            args.bootstrap,
            topic_names.all_topics(),
            args.partitions,
            replication_factor=settings.kafka_replication_factor,
            dlq_retention_ms=settings.kafka_dlq_retention_ms,
            min_insync_replicas=settings.kafka_min_insync_replicas,
        )
        print(f"topics: {len(created)} created, {len(topic_names.all_topics()) - len(created)} already there")
    else:
        for name in sorted(admin(args.bootstrap).list_topics(timeout=10).topics):
            print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
