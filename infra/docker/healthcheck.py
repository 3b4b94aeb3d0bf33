"""The images' HEALTHCHECK.

python infra/docker/healthcheck.py 50051 [service]
    exit 0 when the gRPC health service on 127.0.0.1:<port> says SERVING.
python infra/docker/healthcheck.py --alive-file /tmp/tessera-training-worker.alive 30
    exit 0 when the file was touched in the last 30 s (a training worker has no gRPC port; it
    touches the file from its loop).
"""

import sys
import time
from pathlib import Path


def alive(path: Path, max_age_s: float) -> int:
    try:
        age = time.time() - path.stat().st_mtime
    except OSError as exc:
        print(f"no alive file {path}: {exc.strerror}", file=sys.stderr)
        return 1
    if age > max_age_s:
        print(f"{path} is {age:.0f}s old (limit {max_age_s:g}s)", file=sys.stderr)
        return 1
    return 0


def serving(port: int, service: str) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
    except grpc.RpcError as exc:
        print(f"health check on :{port} failed: {exc.code().name}", file=sys.stderr)
        return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str]) -> int:
    if argv[1] == "--alive-file":
        return alive(Path(argv[2]), float(argv[3]))
    return serving(int(argv[1]), argv[2] if len(argv) > 2 else "")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
