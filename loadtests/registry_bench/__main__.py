"""Metric logging and run search: Tessera's registry against a real MLflow tracking server.

    python -m loadtests.registry_bench [--quick]

Same machine, same PostgreSQL, loopback only, each server its own process:
  (a) Tessera gRPC LogBatch (one sequential client, like the others);
  (b) the stock mlflow client (MlflowClient.log_batch) against Tessera's MLflow REST API;
  (c) the same client against `mlflow server` (from PyPI) on a database of its own.
Logging: 200,000 points over 20 runs in batches of 1,000 (each batch one key,
steps in order), timed from the first batch to the last acknowledgement; run
creation and building the inputs are not timed.
Search: 20,000 finished runs with a `score` metric, seeded identically into
both stores with SQL (setup, not timed), then MlflowClient.search_runs with a
metric filter against each server (median of 5; both must return the same runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import grpc
import psycopg
from psycopg import sql
from tessera.registry.v1 import registry_pb2 as pb
from tessera.registry.v1 import registry_pb2_grpc

from loadtests.registry_bench.servers import BENCH_TOKEN, start_mlflow, start_tessera
from loadtests.report import save, table
from services.common.auth import bearer
from services.common.config import CommonSettings

T0 = 1_700_000_000_000
ROUNDS = 4


def log(message: str) -> None:
    print(f"[registry_bench] {message}", flush=True)


class Progress:
    """A log line every few seconds while a logger works (rates are reported per round)."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.last = time.perf_counter()

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= 5:
            self.last = now
            log(f"{self.label}: {self.done:,}/{self.total:,} points")


def plan(runs: int, points: int, batch: int) -> list[tuple[int, int]]:
    """(run index, first step) per batch: each run's points in order, runs interleaved batch by batch."""
    per_run = points // runs
    return [(r, start) for start in range(0, per_run, batch) for r in range(runs)]


# -- the three loggers: set up outside the clock, then timed round by round ---------------


class GrpcLogger:
    """(a) Tessera's gRPC LogBatch; `in_flight` > 1 pipelines calls over the one HTTP/2 channel."""

    # One event loop for every gRPC logger: grpc.aio channels belong to the loop that made them.
    loop = asyncio.new_event_loop()

    def __init__(self, port: int, runs: int, points: int, batch: int, in_flight: int = 1) -> None:
        self.in_flight = in_flight
        self.md = bearer(BENCH_TOKEN)
        self.requests = self.loop.run_until_complete(self._prepare(port, runs, points, batch))

    async def _prepare(self, port: int, runs: int, points: int, batch: int) -> list:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        exp = await self.stub.CreateExperiment(
            pb.CreateExperimentRequest(name=f"bench-grpc-{uuid.uuid4().hex[:6]}"), metadata=self.md
        )
        run_ids = [
            (
                await self.stub.CreateRun(pb.CreateRunRequest(experiment_id=exp.experiment_id), metadata=self.md)
            ).info.run_id
            for _ in range(runs)
        ]
        return [
            pb.LogBatchRequest(
                run_id=run_ids[r],
                metrics=[
                    pb.Metric(key="loss", value=1.0 / (s + 1), step=s, timestamp_ms=T0 + s)
                    for s in range(start, start + batch)
                ],
            )
            for r, start in plan(runs, points, batch)
        ]

    def run(self, first: int, last: int, progress: Progress) -> float:
        return self.loop.run_until_complete(self._run(self.requests[first:last], progress))

    async def _run(self, requests: list, progress: Progress) -> float:
        started = time.perf_counter()
        queue = iter(requests)

        async def worker() -> None:
            for request in queue:
                await self.stub.LogBatch(request, metadata=self.md)
                progress.add(len(request.metrics))

        await asyncio.gather(*(worker() for _ in range(self.in_flight)))
        return time.perf_counter() - started

    def close(self) -> None:
        self.loop.run_until_complete(self.channel.close())


class MlflowClientLogger:
    """(b)/(c): the stock client's MlflowClient.log_batch, one synchronous call at a time."""

    def __init__(self, url: str, runs: int, points: int, batch: int) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        self.client = MlflowClient(tracking_uri=url)
        exp = self.client.create_experiment(f"bench-{uuid.uuid4().hex[:6]}")
        run_ids = [self.client.create_run(exp).info.run_id for _ in range(runs)]
        self.batches = [
            (run_ids[r], [Metric("loss", 1.0 / (s + 1), T0 + s, s) for s in range(start, start + batch)])
            for r, start in plan(runs, points, batch)
        ]

    def run(self, first: int, last: int, progress: Progress) -> float:
        started = time.perf_counter()
        for run_id, metrics in self.batches[first:last]:
            self.client.log_batch(run_id, metrics=metrics, synchronous=True)
            progress.add(len(metrics))
        return time.perf_counter() - started

    def close(self) -> None:
        pass


def log_in_rounds(loggers: dict, batches: int, rounds: int, batch: int) -> dict[str, float]:
    """Alternate the loggers round by round so each sees the same background load; points/s over all rounds."""
    per_round = -(-batches // rounds)
    elapsed = dict.fromkeys(loggers, 0.0)
    progress = {label: Progress(label, batches * batch) for label in loggers}
    for r in range(rounds):
        first, last = r * per_round, min((r + 1) * per_round, batches)
        for label, logger in loggers.items():
            elapsed[label] += logger.run(first, last, progress[label])
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {progress[k].done / elapsed[k]:,.0f}/s" for k in loggers))
    return {label: batches * batch / seconds for label, seconds in elapsed.items()}


# -- search -------------------------------------------------------------------------------


def seed_tessera(dsn: str, schema: str, experiment_id: str, count: int) -> None:
    query = sql.SQL(
        """WITH made AS (
             INSERT INTO {s}.runs (run_id, experiment_id, run_name, user_id, status, start_time, end_time, artifact_uri)
             SELECT md5('seed' || i), %(e)s, 'seed-' || i, 'bench', 'FINISHED', %(t)s + i, %(t)s + i,
                    'mlflow-artifacts:/' || %(e)s || '/' || md5('seed' || i) || '/artifacts'
             FROM generate_series(1, %(n)s) AS i RETURNING run_pk, start_time - %(t)s AS i, run_name),
           m AS (INSERT INTO {s}.metric_chunks SELECT run_pk, 'score', 0, 0, ARRAY[0],
                 ARRAY[((i * 7919) %% 10000) / 10000.0], ARRAY[%(t)s + i] FROM made),
           l AS (INSERT INTO {s}.latest_metrics SELECT run_pk, 'score', ((i * 7919) %% 10000) / 10000.0, 0, %(t)s + i FROM made)
           INSERT INTO {s}.run_tags SELECT run_pk, 'mlflow.runName', run_name FROM made"""
    ).format(s=sql.Identifier(schema))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query, {"e": int(experiment_id), "t": T0, "n": count})
        conn.execute(
            sql.SQL("ANALYZE {}.runs; ANALYZE {}.latest_metrics").format(sql.Identifier(schema), sql.Identifier(schema))
        )


def seed_mlflow(dsn: str, experiment_id: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        params = {"e": int(experiment_id), "t": T0, "n": count}
        conn.execute(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,"
            " end_time, source_version, lifecycle_stage, artifact_uri, experiment_id)"
            " SELECT md5('seed' || i), 'seed-' || i, 'LOCAL', '', '', 'bench', 'FINISHED', %(t)s + i, %(t)s + i, '',"
            " 'active', 'mlflow-artifacts:/' || %(e)s || '/' || md5('seed' || i) || '/artifacts', %(e)s"
            " FROM generate_series(1, %(n)s) AS i",
            params,
        )
        for table_name in ("metrics", "latest_metrics"):
            conn.execute(
                f"INSERT INTO {table_name} (key, value, timestamp, step, is_nan, run_uuid)"
                " SELECT 'score', ((i * 7919) %% 10000) / 10000.0, %(t)s + i, 0, false, md5('seed' || i)"
                " FROM generate_series(1, %(n)s) AS i",
                params,
            )
        conn.execute(
            "INSERT INTO tags (key, value, run_uuid) SELECT 'mlflow.runName', 'seed-' || i, md5('seed' || i)"
            " FROM generate_series(1, %(n)s) AS i",
            params,
        )
        conn.execute("ANALYZE runs; ANALYZE latest_metrics")


def time_search(url: str, experiment_id: str, filter_string: str, reps: int) -> tuple[float, int]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    timings, found = [], 0
    for _ in range(reps):
        started = time.perf_counter()
        runs = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000)
        timings.append(time.perf_counter() - started)
        found = len(runs)
    return statistics.median(timings) * 1000, found


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the points and runs (smoke)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    runs, points, batch, search_runs = 20, 200_000 // scale, 1_000, 20_000 // scale
    dsn = CommonSettings().resolved_pg_dsn()
    os.environ["MLFLOW_TRACKING_TOKEN"] = BENCH_TOKEN  # Tessera checks it; MLflow ignores it
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")

    log("starting Tessera's registry and a real mlflow server on the same PostgreSQL ...")
    tessera, schema = start_tessera(dsn, log)
    try:
        mlflow_server, mlflow_dsn = start_mlflow(dsn, log)
    except BaseException:
        tessera.stop()
        raise
    results: dict = {"points": points, "runs": runs, "batch": batch, "search_runs": search_runs}
    try:
        log(f"logging {points:,} points over {runs} runs in batches of {batch:,}, in {ROUNDS} alternating rounds")
        loggers = {
            "(a) tessera gRPC": GrpcLogger(tessera.grpc_port, runs, points, batch),
            "(a2) tessera gRPC, 4 in flight": GrpcLogger(tessera.grpc_port, runs, points, batch, in_flight=4),
            "(b) mlflow client -> tessera REST": MlflowClientLogger(tessera.http_url, runs, points, batch),
            "(c) mlflow client -> mlflow server": MlflowClientLogger(mlflow_server.http_url, runs, points, batch),
        }
        rates = log_in_rounds(loggers, points // batch, ROUNDS, batch)
        for logger in loggers.values():
            logger.close()
        grpc_rate, pipelined_rate = rates["(a) tessera gRPC"], rates["(a2) tessera gRPC, 4 in flight"]
        rest_rate, mlflow_rate = rates["(b) mlflow client -> tessera REST"], rates["(c) mlflow client -> mlflow server"]

        from mlflow import MlflowClient

        log(f"seeding {search_runs:,} runs with a score metric into both stores")
        tessera_exp = MlflowClient(tracking_uri=tessera.http_url).create_experiment(
            f"bench-search-{uuid.uuid4().hex[:6]}"
        )
        mlflow_exp = MlflowClient(tracking_uri=mlflow_server.http_url).create_experiment(
            f"bench-search-{uuid.uuid4().hex[:6]}"
        )
        seed_tessera(dsn, schema, tessera_exp, search_runs)
        seed_mlflow(mlflow_dsn, mlflow_exp, search_runs)
        searches = {}
        for label, flt in (
            ("metrics.score > 0.5 (first 1,000)", "metrics.score > 0.5"),
            ("metrics.score > 0.99", "metrics.score > 0.99"),
        ):
            t_ms, t_found = time_search(tessera.http_url, tessera_exp, flt, 5)
            m_ms, m_found = time_search(mlflow_server.http_url, mlflow_exp, flt, 5)
            if t_found != m_found:
                raise RuntimeError(f"search {flt!r}: tessera found {t_found} runs, mlflow {m_found}")
            searches[label] = (t_ms, m_ms, t_found)
            log(f"search {flt!r}: tessera {t_ms:,.0f} ms, mlflow {m_ms:,.0f} ms ({t_found} runs)")
    finally:
        mlflow_server.stop()
        tessera.stop()

    rows = [
        ["log_batch points/s: (a) Tessera gRPC LogBatch", grpc_rate, mlflow_rate, grpc_rate / mlflow_rate, ">= 20x"],
        [
            "log_batch points/s: (a2) Tessera gRPC, 4 calls in flight",
            pipelined_rate,
            mlflow_rate,
            pipelined_rate / mlflow_rate,
            "(extra)",
        ],
        [
            "log_batch points/s: (b) mlflow client -> Tessera REST",
            rest_rate,
            mlflow_rate,
            rest_rate / mlflow_rate,
            ">= 2x",
        ],
    ]
    for label, (t_ms, m_ms, found) in searches.items():
        rows.append(
            [f"search_runs ms over {search_runs:,} runs: {label}, {found} hits", t_ms, m_ms, m_ms / t_ms, "faster"]
        )
    print()
    print(table(["measure", "Tessera", "MLflow server (c)", "ratio (better = >1)", "goal"], rows))
    results.update(
        grpc_points_per_s=grpc_rate,
        grpc_4_in_flight_points_per_s=pipelined_rate,
        tessera_rest_points_per_s=rest_rate,
        mlflow_points_per_s=mlflow_rate,
        search_ms={k: {"tessera": v[0], "mlflow": v[1], "hits": v[2]} for k, v in searches.items()},
    )
    log(f"results: {save('registry_bench', results)}")


if __name__ == "__main__":
    main()
