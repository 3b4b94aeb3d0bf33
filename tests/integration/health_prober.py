"""Probe grpc.health.v1 Check on each address every 100 ms with a 1 s deadline, from a process of its own.

    python -m tests.integration.health_prober 127.0.0.1:50051 127.0.0.1:50052 ...

The services under test run in the test's process, so a prober there would
stall with them (a blocked event loop or a held GIL stops the prober too and
it would miss the stall). From its own process a probe that is not answered
in time is seen as DEADLINE_EXCEEDED. Each failure is one line on stdout:
`FAIL <unix time> <address> <status> <details>`; when stdin closes the prober
prints `PROBES <count>` and exits.
"""

from __future__ import annotations

import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

INTERVAL_S = 0.1
DEADLINE_S = 1.0


def probe(address: str, stop: threading.Event, counts: dict[str, int], out_lock: threading.Lock) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            started = time.monotonic()
            failure = ""
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE_S)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    failure = f"STATUS {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
            except grpc.RpcError as exc:
                failure = f"{exc.code().name} {exc.details()}"
            counts[address] = counts.get(address, 0) + 1
            if failure:
                with out_lock:
                    print(f"FAIL {time.time():.3f} {address} {failure}", flush=True)
            stop.wait(max(0.0, INTERVAL_S - (time.monotonic() - started)))


def main(addresses: list[str]) -> None:
    stop, counts, out_lock = threading.Event(), {}, threading.Lock()
    threads = [threading.Thread(target=probe, args=(a, stop, counts, out_lock), daemon=True) for a in addresses]
    for thread in threads:
        thread.start()
    with out_lock:
        print("READY", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    stop.set()
    for thread in threads:
        thread.join(timeout=DEADLINE_S + 1)
    print(f"PROBES {sum(counts.values())}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
