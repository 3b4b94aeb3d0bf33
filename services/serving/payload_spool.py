"""The payload-log spool: append-only segment files that hold every record until Kafka acknowledged it.

Layout: `<root>/<owner>/<seq>.seg`, one owner folder per process, claimed with an
exclusive `flock` on `<owner>/lock` for the process's lifetime. A folder whose
lock nobody holds belongs to a process that stopped or crashed: the next spool
opened on the same root adopts its segments (renames them into its own folder,
oldest first) and replays them before its own records, so several replicas can
share one data directory and none replays another's live records.

A segment starts with a header (magic, topic) and holds frames
`<u32 body length><u32 crc32(body)><body>`, body = `<u32 key length><key><u32 id length><id><value>`.
Frames are appended in batches, each batch fsync'd before it counts as durable;
a torn or corrupt tail (a crash mid-batch, never acknowledged as durable) ends
the segment's replay. A segment is deleted once it is sealed (full, or left by
a previous process) and every record in it is settled (acknowledged by Kafka,
or given up as undeliverable).

The spool is not thread-safe: one thread (the payload-log writer's) owns it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

_log = logging.getLogger(__name__)

_MAGIC = b"TESSPOOL1\n"
_FRAME = struct.Struct("<II")
_LENGTH = struct.Struct("<I")
_SUFFIX = ".seg"


@dataclass(frozen=True)
class SpooledRecord:
    """One record read back from a segment, with where it lies (to settle it or read it again)."""

    segment: int
    offset: int
    size: int
    topic: str
    key: bytes
    record_id: bytes
    value: bytes
    # W3C traceparent of the request the record logs (b"" when it had none).
    traceparent: bytes = b""


@dataclass
class _Segment:
    seq: int
    path: Path
    topic: str
    # Bytes of whole, durable frames (readers never go past it).
    end: int
    records: int = 0
    settled: int = 0
    # Bytes of frames not yet settled: the backlog.
    unsettled_bytes: int = 0
    sealed: bool = False
    reader: BinaryIO | None = field(default=None, repr=False)


def encode_frame(key: bytes, record_id: bytes, value: bytes, traceparent: bytes = b"") -> bytes:
    """A frame: length and CRC, then key, record id and traceparent (each length-prefixed), then the value."""
    fields = b"".join(_LENGTH.pack(len(f)) + f for f in (key, record_id, traceparent))
    body = fields + value
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def _header(topic: str) -> bytes:
    raw = topic.encode()
    return _MAGIC + _LENGTH.pack(len(raw)) + raw


def _read_header(handle: BinaryIO) -> tuple[str, int] | None:
    magic = handle.read(len(_MAGIC))
    raw_length = handle.read(_LENGTH.size)
    if magic != _MAGIC or len(raw_length) != _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(raw_length)
    topic = handle.read(length)
    if len(topic) != length:
        return None
    return topic.decode("utf-8", "replace"), len(_MAGIC) + _LENGTH.size + length


def _read_frame(handle: BinaryIO) -> tuple[bytes, int] | None:
    """The next whole, intact frame's body and its size on disk; None at the end or at a torn tail."""
    head = handle.read(_FRAME.size)
    if len(head) != _FRAME.size:
        return None
    length, crc = _FRAME.unpack(head)
    body = handle.read(length)
    if len(body) != length or zlib.crc32(body) != crc:
        return None
    return body, _FRAME.size + length


def _split_body(body: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(key, record id, traceparent, value) of a frame's body."""
    fields, at = [], 0
    for _ in range(3):
        (length,) = _LENGTH.unpack_from(body, at)
        fields.append(body[at + 4 : at + 4 + length])
        at += 4 + length
    key, record_id, traceparent = fields
    return key, record_id, traceparent, body[at:]


class PayloadSpool:
    """Segments of one owner folder, oldest first, plus a read cursor over them."""

    def __init__(self, root: Path, topic: str, *, segment_bytes: int) -> None:
        self.root = root
        self.topic = topic
        self._segment_bytes = segment_bytes
        self._segments: dict[int, _Segment] = {}
        self._next_seq = 1
        self._writer: BinaryIO | None = None
        # Next record to hand out: (segment seq, offset).
        self._cursor: tuple[int, int] | None = None
        self.disk_bytes = 0
        self.dir = root / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock: BinaryIO | None = None

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> int:
        """Claim an owner folder and adopt every orphaned one; the number of records adopted."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / "lock", "wb")  # noqa: SIM115 - held for the spool's lifetime
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        adopted = 0
        for orphan in sorted(p for p in self.root.iterdir() if p.is_dir() and p != self.dir):
            adopted += self._adopt(orphan)
        return adopted

    def close(self, *, keep: bool) -> None:
        """Release the folder; with nothing left in it (and not `keep`), remove it."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for segment in self._segments.values():
            if segment.reader is not None:
                segment.reader.close()
        empty = not any(s.records > s.settled for s in self._segments.values())
        if empty and not keep:
            for segment in list(self._segments.values()):
                segment.path.unlink(missing_ok=True)
            self._segments.clear()
            (self.dir / "lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.dir.rmdir()
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def _adopt(self, orphan: Path) -> int:
        lock_path = orphan / "lock"
        try:
            lock = open(lock_path, "ab")  # noqa: SIM115 - closed below
        except OSError:
            return 0  # being removed by whoever adopted it first
        adopted = 0
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live process owns it
            for path in sorted(orphan.glob(f"*{_SUFFIX}")):
                target = self.dir / f"{self._next_seq:016d}{_SUFFIX}"
                os.rename(path, target)
                segment = self._scan(self._next_seq, target)
                self._next_seq += 1
                if segment is None:
                    target.unlink(missing_ok=True)
                    continue
                adopted += segment.records
            lock_path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                orphan.rmdir()
            _fsync_dir(self.dir)
        finally:
            lock.close()
        if adopted:
            _log.info("payload spool: adopted %d record(s) from %s", adopted, orphan.name)
        return adopted

    def _scan(self, seq: int, path: Path) -> _Segment | None:
        """Index a segment left by another process (sealed: nothing appends to it any more)."""
        with open(path, "rb") as handle:
            header = _read_header(handle)
            if header is None:
                return None
            topic, end = header
            segment = _Segment(seq, path, topic, end, sealed=True)
            while (frame := _read_frame(handle)) is not None:
                segment.records += 1
                segment.unsettled_bytes += frame[1]
                end += frame[1]
            segment.end = end
        if segment.records == 0:
            return None
        self._segments[seq] = segment
        self.disk_bytes += path.stat().st_size
        if self._cursor is None:
            self._cursor = (seq, len(_header(topic)))
        return segment

    # -- writing -----------------------------------------------------------

    def append(self, frames: list[bytes]) -> None:
        """Append frames to the active segment and fsync them: durable when this returns."""
        if not frames:
            return
        segment = self._active()
        assert self._writer is not None
        data = b"".join(frames)
        try:
            self._writer.write(data)
            self._writer.flush()
            os.fsync(self._writer.fileno())
        except OSError:
            self._abandon(segment)
            raise
        segment.end += len(data)
        segment.records += len(frames)
        segment.unsettled_bytes += len(data)
        self.disk_bytes += len(data)
        if segment.end >= self._segment_bytes:
            self._seal(segment)

    def _active(self) -> _Segment:
        if self._writer is not None:
            return self._segments[self._next_seq - 1]
        seq = self._next_seq
        self._next_seq += 1
        path = self.dir / f"{seq:016d}{_SUFFIX}"
        header = _header(self.topic)
        self._writer = open(path, "wb")  # noqa: SIM115 - closed when the segment is sealed
        self._writer.write(header)
        self._writer.flush()
        os.fsync(self._writer.fileno())
        _fsync_dir(self.dir)
        segment = _Segment(seq, path, self.topic, len(header))
        self._segments[seq] = segment
        self.disk_bytes += len(header)
        if self._cursor is None:
            self._cursor = (seq, len(header))
        return segment

    def _abandon(self, segment: _Segment) -> None:
        """A write failed (disk full...): seal the segment at its last durable frame; the caller retries."""
        writer, self._writer = self._writer, None
        with contextlib.suppress(OSError):
            writer.close()
        with contextlib.suppress(OSError):
            os.truncate(segment.path, segment.end)
        self._seal(segment)

    def _seal(self, segment: _Segment) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        segment.sealed = True
        self._drop_if_settled(segment)

    # -- reading -----------------------------------------------------------

    def next_record(self) -> SpooledRecord | None:
        """The next durable record not yet handed out, in spool order; None when caught up."""
        while self._cursor is not None:
            seq, offset = self._cursor
            segment = self._segments.get(seq)
            if segment is None:
                self._cursor = self._after(seq)
                continue
            if offset >= segment.end:
                if not segment.sealed:
                    return None  # caught up with the writer
                self._cursor = self._after(seq)
                continue
            record = self._read(segment, offset)
            self._cursor = (seq, offset + record.size)
            return record
        return None

    def reread(self, segment_seq: int, offset: int) -> SpooledRecord | None:
        """A record handed out before (its delivery failed), read again from disk."""
        segment = self._segments.get(segment_seq)
        return None if segment is None else self._read(segment, offset)

    def _after(self, seq: int) -> tuple[int, int] | None:
        later = [s for s in self._segments if s > seq]
        if not later:
            # Nothing newer yet: stay past this one; the next segment created starts the cursor again.
            return None
        nxt = self._segments[min(later)]
        return nxt.seq, len(_header(nxt.topic))

    def _read(self, segment: _Segment, offset: int) -> SpooledRecord:
        if segment.reader is None:
            segment.reader = open(segment.path, "rb")  # noqa: SIM115 - closed with the segment
        segment.reader.seek(offset)
        frame = _read_frame(segment.reader)
        if frame is None:  # cannot happen below `end`, which only counts intact frames
            raise OSError(f"payload spool segment {segment.path} is damaged at {offset}")
        key, record_id, traceparent, value = _split_body(frame[0])
        return SpooledRecord(segment.seq, offset, frame[1], segment.topic, key, record_id, value, traceparent)

    # -- settling ----------------------------------------------------------

    def settle(self, segment_seq: int, size: int) -> None:
        """A record is done with (acknowledged by Kafka, or undeliverable and counted)."""
        segment = self._segments.get(segment_seq)
        if segment is None:
            return
        segment.settled += 1
        segment.unsettled_bytes -= size
        self._drop_if_settled(segment)

    def _drop_if_settled(self, segment: _Segment) -> None:
        if not segment.sealed or segment.settled < segment.records:
            return
        if segment.reader is not None:
            segment.reader.close()
        with contextlib.suppress(FileNotFoundError):
            self.disk_bytes -= segment.path.stat().st_size
            segment.path.unlink()
        del self._segments[segment.seq]
        if self._cursor is not None and self._cursor[0] == segment.seq:
            self._cursor = self._after(segment.seq)

    # -- backlog -----------------------------------------------------------

    @property
    def unsettled_records(self) -> int:
        return sum(s.records - s.settled for s in self._segments.values())

    @property
    def unsettled_bytes(self) -> int:
        return sum(s.unsettled_bytes for s in self._segments.values())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
