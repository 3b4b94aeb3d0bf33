"""Core exceptions, free of any transport.

Service cores raise these; the gRPC layer maps them to status codes and the
Kafka layer to DLQ records and error responses, so a caller always gets a clear
reason and never a stack trace.
"""

from __future__ import annotations

import grpc


class TesseraError(Exception):
    """Base of every error a service reports to its caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def code_name(self) -> str:
        return self.code.name


class InvalidArgument(TesseraError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(TesseraError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TesseraError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(TesseraError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(TesseraError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(TesseraError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(TesseraError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(TesseraError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(TesseraError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The status code a caller sees for `exc` (INTERNAL for anything unexpected)."""
    if isinstance(exc, TesseraError):
        return exc.code
    return grpc.StatusCode.INTERNAL
