"""`python -m loadtests.scale_bench`: one and two replicas of serving and monitoring on one machine.

For REPLICAS in (1, 2), real service processes (services/fixtures/mesh_processes: what
`make up REPLICAS=2` runs) on one Kafka and one PostgreSQL, 4 partitions per topic:
1. Serving: a backlog of tensor requests over Kafka answered on the reply topic; requests/s,
   and any request answered twice.
2. Monitoring: a backlog of payload logs ingested into the inference table; records/s, and any
   request id stored twice.
3. Failover (two replicas): SIGKILL one replica of each, keep a trickle of records on every
   partition, and time from the kill until every partition is served again (the survivor's own
   partitions answer at once; the killed one's wait for the group to notice and rebalance).

On a 2-core machine the point is not a speed-up: it is that the second replica takes its
share of partitions without duplicates or stalls. Bounded (a few minutes), loopback only;
writes loadtests/results/scale_bench-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer
from psycopg import sql
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.events.v1.payload_log_pb2 import PayloadLog

from loadtests import report
from services.common.kafka_producer import RECORD_ID
from services.fixtures.mesh_processes import (
    USER_TOKENS,
    Mesh,
    deploy_tabular,
    group_assignment,
    start_mesh,
)

log = logging.getLogger("scale_bench")
PARTITIONS = 4
PAYLOAD_HEADERS = [("content-type", b"application/x-protobuf"), ("schema", b"tessera.events.v1.PayloadLog")]


def _payload_log(endpoint: str, request_id: str) -> bytes:
    message = PayloadLog(
        request_id=request_id,
        endpoint=endpoint,
        served_model="main.default.tabular",
        model_version="1",
        source="kafka",
        status="OK",
        latency_ms=3.0,
    )
    message.inputs.update({"features": [1.0, 2.0, 3.0, 4.0]})
    message.outputs.update({"score": 10.0})
    message.timestamp.FromNanoseconds(time.time_ns())
    return message.SerializeToString()


def _request(endpoint: str, request_id: str) -> bytes:
    return json.dumps(
        {
            "request_id": request_id,
            "endpoint": endpoint,
            "tensors": {"features": [[1, 2, 3, 4]], "category": [1]},
            "auth_token": USER_TOKENS["alice"],
        }
    ).encode()


def _reader(mesh: Mesh) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": mesh.kafka_bootstrap,
            "group.id": f"scale-bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([mesh.topics["responses"]])
    # Join now, so `latest` means before the first request.
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.2)
    return consumer


def _collect_responses(consumer: Consumer, wanted: set[str], timeout_s: float) -> dict[str, list[float]]:
    """Arrival times of the successful answers per request id until every wanted one came (then
    2 s more for duplicates); an error answer counts as no answer."""
    seen: dict[str, list[float]] = {}
    deadline, settle = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
        for message in consumer.consume(1000, 0.2):
            if message.error():
                continue
            response = events_pb.InferenceResponse.FromString(message.value())
            if response.request_id in wanted and response.status == "OK":
                seen.setdefault(response.request_id, []).append(time.time())
        if settle is None and len(seen) == len(wanted):
            settle = time.monotonic() + 2.0
    return seen


def _ingested(mesh: Mesh, endpoint: str) -> tuple[int, int]:
    with psycopg.connect(mesh.pg_dsn) as conn:
        rows, ids = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT request_id) FROM {}.inference_records WHERE endpoint = %s").format(
                sql.Identifier(mesh.schemas["monitoring"])
            ),
            (endpoint,),
        ).fetchone()
    return rows, ids


def _first_ingested(mesh: Mesh, request_ids: list[str]) -> dict[str, float]:
    with psycopg.connect(mesh.pg_dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT request_id, extract(epoch FROM ingested_at) FROM {}.inference_records WHERE request_id = ANY(%s)"
            ).format(sql.Identifier(mesh.schemas["monitoring"])),
            (request_ids,),
        ).fetchall()
    return {rid: float(at) for rid, at in rows}


async def _wait_shared(mesh: Mesh, group: str, members: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        split = group_assignment(mesh.kafka_bootstrap, group)
        if len(split) == members and all(split.values()):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{group} never had {members} members with partitions")


def serving_throughput(mesh: Mesh, endpoint: str, count: int) -> dict:
    consumer = _reader(mesh)
    ids = [f"sb-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    producer = Producer({"bootstrap.servers": mesh.kafka_bootstrap, "linger.ms": 5})
    started = time.time()
    for rid in ids:
        producer.produce(
            mesh.topics["requests"], _request(endpoint, rid), key=rid, headers=[("content-type", b"application/json")]
        )
    producer.flush(60)
    seen = _collect_responses(consumer, set(ids), timeout_s=300)
    consumer.close()
    last = max((min(times) for times in seen.values()), default=time.time())
    return {
        "requests": count,
        "answered": len(seen),  # successfully
        "answered_twice": sum(1 for times in seen.values() if len(times) > 1),
        "seconds": last - started,
        "per_s": len(seen) / max(last - started, 1e-9),
    }


async def monitoring_throughput(mesh: Mesh, count: int) -> dict:
    endpoint = f"bench-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": mesh.kafka_bootstrap, "linger.ms": 5, "batch.size": 1_000_000})
    values = [(f"{endpoint}-{i}", _payload_log(endpoint, f"{endpoint}-{i}")) for i in range(count)]
    started = time.time()
    for rid, value in values:
        producer.produce(mesh.topics["payloads"], value, key=rid, headers=[*PAYLOAD_HEADERS, (RECORD_ID, rid.encode())])
    producer.flush(60)
    deadline = time.monotonic() + 300
    rows = ids = 0
    while time.monotonic() < deadline:
        rows, ids = _ingested(mesh, endpoint)
        if ids >= count:
            break
        await asyncio.sleep(0.25)
    seconds = time.time() - started
    return {"records": count, "ingested": ids, "stored_twice": rows - ids, "seconds": seconds, "per_s": ids / seconds}


async def monitoring_failover(mesh: Mesh) -> dict:
    """Kill one monitoring replica; a record per partition every 100 ms; seconds until each
    partition's first post-kill record is ingested (the worst partition is the handover time)."""
    endpoint = f"failover-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": mesh.kafka_bootstrap, "linger.ms": 0})
    victim = mesh.monitoring[-1]
    killed_at = time.time()
    victim.kill()
    sent: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    served: dict[int, float] = {}
    deadline = time.monotonic() + 120
    i = 0
    while len(served) < PARTITIONS and time.monotonic() < deadline:
        for p in range(PARTITIONS):
            rid = f"{endpoint}-{p}-{i}"
            producer.produce(
                mesh.topics["payloads"],
                _payload_log(endpoint, rid),
                key=rid,
                partition=p,
                headers=[*PAYLOAD_HEADERS, (RECORD_ID, rid.encode())],
            )
            sent[p].append(rid)
        producer.flush(10)
        i += 1
        if i % 5 == 0:
            ingested = _first_ingested(mesh, [rid for ids in sent.values() for rid in ids])
            for p, ids in sent.items():
                times = [ingested[rid] for rid in ids if rid in ingested]
                if times and p not in served:
                    served[p] = min(times) - killed_at
        await asyncio.sleep(0.1)
    rows, ids = _ingested(mesh, endpoint)
    return {
        "partitions_served_again": len(served),
        "seconds_worst_partition": max(served.values(), default=float("nan")),
        "seconds_best_partition": min(served.values(), default=float("nan")),
        "stored_twice": rows - ids,
    }


async def serving_failover(mesh: Mesh, endpoint: str) -> dict:
    consumer = _reader(mesh)
    producer = Producer({"bootstrap.servers": mesh.kafka_bootstrap, "linger.ms": 0})
    victim = mesh.serving[-1]
    killed_at = time.time()
    victim.kill()
    first: dict[int, float] = {}
    by_id: dict[str, int] = {}
    answers: dict[str, int] = {}
    deadline = time.monotonic() + 120
    i = 0
    while len(first) < PARTITIONS and time.monotonic() < deadline:
        for p in range(PARTITIONS):
            rid = f"fo-{p}-{i}-{uuid.uuid4().hex[:6]}"
            by_id[rid] = p
            producer.produce(
                mesh.topics["requests"],
                _request(endpoint, rid),
                key=rid,
                partition=p,
                headers=[("content-type", b"application/json")],
            )
        producer.flush(10)
        i += 1
        for message in consumer.consume(1000, 0.1):
            if message.error():
                continue
            response = events_pb.InferenceResponse.FromString(message.value())
            rid = response.request_id
            if rid in by_id and response.status == "OK":
                answers[rid] = answers.get(rid, 0) + 1
                first.setdefault(by_id[rid], time.time() - killed_at)
    consumer.close()
    return {
        "partitions_served_again": len(first),
        "seconds_worst_partition": max(first.values(), default=float("nan")),
        "seconds_best_partition": min(first.values(), default=float("nan")),
        "answered_twice": sum(1 for n in answers.values() if n > 1),
    }


async def run(kafka: str, pg_dsn: str, requests: int, logs: int) -> dict:
    results: dict = {"replicas": {}}
    for replicas in (1, 2):
        work = Path(tempfile.mkdtemp(prefix=f"scale-bench-{replicas}-"))
        log.info("starting %d replica(s) of serving and monitoring (logs under %s)", replicas, work / "logs")
        mesh = await start_mesh(kafka, pg_dsn, work, serving=1, monitoring=replicas, partitions=PARTITIONS)
        try:
            endpoint = await deploy_tabular(mesh, mesh.serving[0], users=["alice"])
            # Later replicas load the endpoint at start (whether running replicas learn of new
            # endpoints is the serving service's business, not what this measures).
            if replicas > 1:
                await mesh.add("serving", replicas - 1)
            await _wait_shared(mesh, mesh.groups["serving"], replicas)
            await _wait_shared(mesh, mesh.groups["monitoring"], replicas)
            # Warm every replica (model load, privilege cache) before timing.
            warm = serving_throughput(mesh, endpoint.name, 40)
            log.info("warm-up: %s", warm)
            entry = {
                "serving": serving_throughput(mesh, endpoint.name, requests),
                "monitoring": await monitoring_throughput(mesh, logs),
            }
            if replicas == 2:
                entry["monitoring_failover"] = await monitoring_failover(mesh)
                entry["serving_failover"] = await serving_failover(mesh, endpoint.name)
            results["replicas"][replicas] = entry
            log.info("%d replica(s): %s", replicas, entry)
        finally:
            mesh.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--pg-dsn", default="")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--logs", type=int, default=20000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from services.common.config import CommonSettings, load

    pg_dsn = args.pg_dsn or load(CommonSettings).resolved_pg_dsn()
    results = asyncio.run(run(args.kafka, pg_dsn, args.requests, args.logs))
    rows = []
    for replicas, entry in results["replicas"].items():
        s, m = entry["serving"], entry["monitoring"]
        rows.append(
            [replicas, "serving (Kafka requests)", s["per_s"], f"{s['answered']}/{s['requests']}", s["answered_twice"]]
        )
        rows.append(
            [replicas, "monitoring (payload logs)", m["per_s"], f"{m['ingested']}/{m['records']}", m["stored_twice"]]
        )
    print(report.table(["replicas", "path", "per second", "handled", "duplicates"], rows))
    two = results["replicas"].get(2, {})
    failover_rows = [
        [
            name,
            f["partitions_served_again"],
            f["seconds_best_partition"],
            f["seconds_worst_partition"],
            f.get("answered_twice", f.get("stored_twice")),
        ]
        for name, f in (("serving", two.get("serving_failover")), ("monitoring", two.get("monitoring_failover")))
        if f
    ]
    if failover_rows:
        print()
        print(
            report.table(
                ["killed replica", "partitions served again", "first (s)", "last (s)", "duplicates"], failover_rows
            )
        )
    print(f"results: {report.save('scale_bench', results)}")


if __name__ == "__main__":
    main()
