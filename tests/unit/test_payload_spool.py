"""The payload-log spool's file logic, record caps, reply-topic allow-list and DLQ redaction (no infrastructure)."""

from __future__ import annotations

import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Message
from tessera.events.v1 import serving_pb2 as events_pb

from services.common.errors import PermissionDenied
from services.serving.kafka_api import ReplyTopics, redacted_request
from services.serving.payload_log import PayloadRecord
from services.serving.payload_spool import PayloadSpool, encode_frame

pytestmark = pytest.mark.unit


def _spool(root: Path, segment_bytes: int = 1 << 20) -> PayloadSpool:
    spool = PayloadSpool(root, "t.logs", segment_bytes=segment_bytes)
    spool.open()
    return spool


def _frames(*ids: str) -> list[bytes]:
    return [encode_frame(b"ep", i.encode(), f"value-{i}".encode()) for i in ids]


def _drain(spool: PayloadSpool) -> list[str]:
    out = []
    while (record := spool.next_record()) is not None:
        out.append(record.record_id.decode())
    return out


def test_a_left_spool_is_adopted_and_read_back_in_order(tmp_path: Path) -> None:
    first = _spool(tmp_path, segment_bytes=100)
    first.append(_frames("a", "b"))
    first.append(_frames("c"))
    first.close(keep=True)

    second = _spool(tmp_path)
    records = []
    while (record := second.next_record()) is not None:
        records.append(record)
    assert [r.record_id for r in records] == [b"a", b"b", b"c"]
    assert (records[0].topic, records[0].key, records[0].value) == ("t.logs", b"ep", b"value-a")
    assert second.unsettled_records == 3


def test_a_torn_tail_ends_the_replay_and_keeps_every_whole_record(tmp_path: Path) -> None:
    first = _spool(tmp_path)
    first.append(_frames("a", "b"))
    (segment,) = first.dir.glob("*.seg")
    first.close(keep=True)
    whole = encode_frame(b"ep", b"c", b"value-c")
    with open(segment, "ab") as handle:
        handle.write(whole[: len(whole) // 2])  # a crash in the middle of a write

    assert _drain(_spool(tmp_path)) == ["a", "b"]


def test_a_folder_whose_owner_is_alive_is_left_alone(tmp_path: Path) -> None:
    live = tmp_path / "live-owner"
    live.mkdir()
    lock = open(live / "lock", "wb")  # noqa: SIM115 - held for the test
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    (live / "0000000000000001.seg").write_bytes(b"not ours")
    try:
        assert _spool(tmp_path).unsettled_records == 0
        assert (live / "0000000000000001.seg").exists()
    finally:
        lock.close()


def test_a_sealed_segment_is_deleted_once_every_record_is_settled(tmp_path: Path) -> None:
    spool = _spool(tmp_path, segment_bytes=1)  # every append seals its segment
    spool.append(_frames("a", "b"))
    spool.append(_frames("c"))
    records = [spool.next_record() for _ in range(3)]
    for record in records[:2]:
        spool.settle(record.segment, record.size)
    assert len(list(spool.dir.glob("*.seg"))) == 1
    assert spool.reread(records[2].segment, records[2].offset).record_id == b"c"
    spool.settle(records[2].segment, records[2].size)
    assert not list(spool.dir.glob("*.seg")) and spool.unsettled_bytes == 0


def test_a_large_tensor_is_logged_as_its_shape_within_the_record_limit() -> None:
    record = PayloadRecord(
        "r", "ep", "oip", "OK", datetime.now(UTC), {"pixels": np.zeros((1000, 1000), np.float32), "k": np.arange(3)}
    )
    message = record.to_proto(max_bytes=64 * 1024)
    assert message.ByteSize() <= 64 * 1024
    assert message.inputs["pixels"]["shape"] == [1000, 1000] and message.inputs["pixels"]["dtype"] == "float32"
    assert list(message.inputs["k"]) == [0, 1, 2]


def test_reply_topics_are_the_default_exact_names_and_prefixes_only() -> None:
    topics = ReplyTopics("tessera.serving.responses,tessera.serving.responses.*,team.replies", "own.responses")
    for allowed in ("own.responses", "tessera.serving.responses", "tessera.serving.responses.alice", "team.replies"):
        assert topics.allows(allowed), allowed
    for refused in (
        "tessera.serving.responses.",
        "other",
        "team.replies.x",
        "tessera.serving.responses.a b",
        "x" * 300,
    ):
        assert not topics.allows(refused), refused
    with pytest.raises(PermissionDenied, match="not allowed"):
        topics.check("__consumer_offsets")


def test_the_dead_letter_copy_carries_no_auth_token() -> None:
    proto = events_pb.InferenceRequest(request_id="r", endpoint="ep", prompt="hi", auth_token="secret-token")
    redacted = events_pb.InferenceRequest.FromString(redacted_request(Message(value=proto.SerializeToString())))
    assert (redacted.auth_token, redacted.prompt) == ("[redacted]", "hi")

    body = json.dumps({"request_id": "r", "authToken": "secret-token", "prompt": "hi"}).encode()
    as_json = redacted_request(Message(value=body, headers=[("content-type", b"application/json")]))
    assert b"secret-token" not in as_json and json.loads(as_json)["prompt"] == "hi"
