"""Exit 0 when the gRPC health service on 127.0.0.1:<port> says SERVING (the images' HEALTHCHECK).

python infra/docker/healthcheck.py 50051 [service]
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    port = int(argv[1])
    service = argv[2] if len(argv) > 2 else ""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
    except grpc.RpcError as exc:
        print(f"health check on :{port} failed: {exc.code().name}", file=sys.stderr)
        return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
