#!/usr/bin/env python3
"""Checks that an fp8d daemon is healthy and follows one job's metric stream.

An example of using fp8d from Python with Debian's python3-grpcio and the stubs generated from
proto/fp8d/v1 (the build writes them to build/proto/py):

    PYTHONPATH=build/proto/py python3 client/python/follow_metrics.py \
        --addr 127.0.0.1:7070 --job jobs/demo-1

Prints one JSON object per metric record, as `fp8ctl --json watch` does, and exits when the job
ends (or after --max-records). Exit status: 0 on success, 1 when the daemon is not serving or a
call fails.
"""
import argparse
import json
import os
import sys

import grpc
from google.protobuf import json_format

from fp8d.v1 import trainer_pb2, trainer_pb2_grpc

# grpc.health.v1.HealthCheckResponse.ServingStatus values.
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def parse_health_response(data: bytes) -> int:
    """Decodes HealthCheckResponse {ServingStatus status = 1;} without generated stubs:
    field 1 as a varint is the bytes 0x08 <status>; an empty message means UNKNOWN (0)."""
    if len(data) >= 2 and data[0] == 0x08:
        return data[1]
    return 0


def check_health(channel, metadata, timeout: float) -> str:
    """grpc.health.v1.Health/Check for the whole server (empty service name = empty request)."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda _: b"",
        response_deserializer=parse_health_response,
    )
    return HEALTH_STATUS.get(check(None, metadata=metadata, timeout=timeout), "UNKNOWN")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default=os.environ.get("FP8D_ADDR", "127.0.0.1:7070"))
    parser.add_argument("--token-file", default=os.environ.get("FP8D_TOKEN_FILE", ""))
    parser.add_argument("--job", required=True, help="jobs/{job} or the bare job id")
    parser.add_argument("--from-step", type=int, default=0)
    parser.add_argument("--max-records", type=int, default=0, help="stop after N records (0 = until the job ends)")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of the unary calls, seconds")
    args = parser.parse_args()

    metadata = []
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            metadata.append(("authorization", "Bearer " + f.readline().strip()))

    job = args.job if args.job.startswith("jobs/") else "jobs/" + args.job
    with grpc.insecure_channel(args.addr) as channel:
        try:
            return follow(channel, metadata, job, args)
        except grpc.RpcError as e:
            print(f"fp8d: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1


def follow(channel, metadata, job: str, args) -> int:
    status = check_health(channel, metadata, args.timeout)
    print(json.dumps({"health": status}), flush=True)
    if status != "SERVING":
        return 1

    stub = trainer_pb2_grpc.TrainerStub(channel)
    info = stub.GetServerInfo(trainer_pb2.GetServerInfoRequest(), metadata=metadata, timeout=args.timeout)
    print(json.dumps({"server": {"version": info.version, "engine": info.engine}}), flush=True)

    request = trainer_pb2.StreamMetricsRequest(name=job, from_step=args.from_step, follow=True)
    stream = stub.StreamMetrics(request, metadata=metadata)
    count = 0
    for record in stream:
        print(json_format.MessageToJson(record, indent=None, preserving_proto_field_name=True), flush=True)
        count += 1
        if args.max_records and count >= args.max_records:
            stream.cancel()  # detaches; the job keeps running
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
