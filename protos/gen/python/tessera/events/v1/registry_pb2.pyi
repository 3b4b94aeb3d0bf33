import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegistryEvent(_message.Message):
    __slots__ = ("event_id", "type", "occurred_at", "actor", "model_name", "version", "alias", "previous_version", "source_uri", "grant", "storage_location", "run_id", "status_message", "new_model_name")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[RegistryEvent.Type]
        MODEL_VERSION_CREATED: _ClassVar[RegistryEvent.Type]
        MODEL_VERSION_READY: _ClassVar[RegistryEvent.Type]
        MODEL_VERSION_FAILED: _ClassVar[RegistryEvent.Type]
        ALIAS_SET: _ClassVar[RegistryEvent.Type]
        ALIAS_DELETED: _ClassVar[RegistryEvent.Type]
        MODEL_DELETED: _ClassVar[RegistryEvent.Type]
        GRANT_CHANGED: _ClassVar[RegistryEvent.Type]
        MODEL_VERSION_DELETED: _ClassVar[RegistryEvent.Type]
        MODEL_RENAMED: _ClassVar[RegistryEvent.Type]
        OWNER_CHANGED: _ClassVar[RegistryEvent.Type]
        SECURABLE_REGISTERED: _ClassVar[RegistryEvent.Type]
        SECURABLE_CHANGED: _ClassVar[RegistryEvent.Type]
        SECURABLE_UNREGISTERED: _ClassVar[RegistryEvent.Type]
    TYPE_UNSPECIFIED: RegistryEvent.Type
    MODEL_VERSION_CREATED: RegistryEvent.Type
    MODEL_VERSION_READY: RegistryEvent.Type
    MODEL_VERSION_FAILED: RegistryEvent.Type
    ALIAS_SET: RegistryEvent.Type
    ALIAS_DELETED: RegistryEvent.Type
    MODEL_DELETED: RegistryEvent.Type
    GRANT_CHANGED: RegistryEvent.Type
    MODEL_VERSION_DELETED: RegistryEvent.Type
    MODEL_RENAMED: RegistryEvent.Type
    OWNER_CHANGED: RegistryEvent.Type
    SECURABLE_REGISTERED: RegistryEvent.Type
    SECURABLE_CHANGED: RegistryEvent.Type
    SECURABLE_UNREGISTERED: RegistryEvent.Type
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    STORAGE_LOCATION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NEW_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: RegistryEvent.Type
    occurred_at: _timestamp_pb2.Timestamp
    actor: str
    model_name: str
    version: int
    alias: str
    previous_version: int
    source_uri: str
    grant: GrantChange
    storage_location: str
    run_id: str
    status_message: str
    new_model_name: str
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[_Union[RegistryEvent.Type, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[int] = ..., alias: _Optional[str] = ..., previous_version: _Optional[int] = ..., source_uri: _Optional[str] = ..., grant: _Optional[_Union[GrantChange, _Mapping]] = ..., storage_location: _Optional[str] = ..., run_id: _Optional[str] = ..., status_message: _Optional[str] = ..., new_model_name: _Optional[str] = ...) -> None: ...

class GrantChange(_message.Message):
    __slots__ = ("securable_type", "securable_name", "principal", "added", "removed")
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    securable_type: str
    securable_name: str
    principal: str
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, securable_type: _Optional[str] = ..., securable_name: _Optional[str] = ..., principal: _Optional[str] = ..., added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...
