"""Exit 0 when an interlockd answers SERVING to a gRPC health check, else 1.

The container's health check (deploy/Dockerfile's HEALTHCHECK, used by
compose): it asks the standard ``grpc.health.v1.Health/Check`` for the whole
server (service ""), the one Kubernetes' native ``grpc`` probes ask. The
daemon answers NOT_SERVING from the moment a stop is announced
(``shutdown_announce_seconds``), so a draining replica is reported unhealthy
while its port is still open.

    python healthcheck.py [HOST:PORT]

The address defaults to this host's port of ``INTERLOCK_LISTEN`` (7600).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        target = argv[1]
    else:
        port = os.environ.get("INTERLOCK_LISTEN", "0.0.0.0:7600").rsplit(":", 1)[1]
        target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
