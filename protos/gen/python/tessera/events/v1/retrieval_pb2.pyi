import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrievalSyncRecord(_message.Message):
    __slots__ = ("record_id", "index", "op", "document_id", "version", "text", "vector", "metadata", "source_timestamp")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[RetrievalSyncRecord.Op]
        UPSERT: _ClassVar[RetrievalSyncRecord.Op]
        DELETE: _ClassVar[RetrievalSyncRecord.Op]
    OP_UNSPECIFIED: RetrievalSyncRecord.Op
    UPSERT: RetrievalSyncRecord.Op
    DELETE: RetrievalSyncRecord.Op
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    index: str
    op: RetrievalSyncRecord.Op
    document_id: str
    version: int
    text: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    metadata: _struct_pb2.Struct
    source_timestamp: _timestamp_pb2.Timestamp
    def __init__(self, record_id: _Optional[str] = ..., index: _Optional[str] = ..., op: _Optional[_Union[RetrievalSyncRecord.Op, str]] = ..., document_id: _Optional[str] = ..., version: _Optional[int] = ..., text: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., source_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
