"""`tessera.serving.v1.ServingService`: endpoint CRUD and Generate/GenerateStream over the core."""

from __future__ import annotations

import uuid
from datetime import UTC

from tessera.serving.v1 import serving_pb2 as pb
from tessera.serving.v1 import serving_pb2_grpc

from services.common.auth import current_principal
from services.common.errors import Unavailable
from services.serving.converters import (
    citations_to_proto,
    endpoint_to_proto,
    generate_call,
    generate_response,
    limits_scope,
    spec_from_proto,
    usage_limit_from_proto,
    usage_limit_to_proto,
    usage_row_to_proto,
)
from services.serving.endpoints import EndpointControl
from services.serving.inference import InferenceCore
from services.serving.usage import UsageMeter

SERVICE_NAME = "tessera.serving.v1.ServingService"


class ServingServicer(serving_pb2_grpc.ServingServiceServicer):
    def __init__(self, endpoints: EndpointControl, inference: InferenceCore) -> None:
        self._endpoints = endpoints
        self._inference = inference

    async def CreateEndpoint(self, request: pb.CreateEndpointRequest, context) -> pb.Endpoint:
        spec = spec_from_proto(request.name, request.served_models, request.max_concurrency)
        return endpoint_to_proto(await self._endpoints.create(spec, current_principal(), wait=request.wait))

    async def UpdateEndpoint(self, request: pb.UpdateEndpointRequest, context) -> pb.Endpoint:
        spec = spec_from_proto(request.name, request.served_models, request.max_concurrency)
        return endpoint_to_proto(await self._endpoints.update(spec, current_principal(), wait=request.wait))

    async def DeleteEndpoint(self, request: pb.DeleteEndpointRequest, context) -> pb.DeleteEndpointResponse:
        await self._endpoints.delete(request.name, current_principal())
        return pb.DeleteEndpointResponse()

    async def GetEndpoint(self, request: pb.GetEndpointRequest, context) -> pb.Endpoint:
        return endpoint_to_proto(await self._endpoints.get(request.name, current_principal()))

    async def ListEndpoints(self, request: pb.ListEndpointsRequest, context) -> pb.ListEndpointsResponse:
        page = await self._endpoints.list(current_principal(), request.page.page_size, request.page.page_token)
        response = pb.ListEndpointsResponse(endpoints=[endpoint_to_proto(v) for v in page.items])
        response.page.next_page_token = page.next_token
        return response

    async def Generate(self, request: pb.GenerateRequest, context) -> pb.GenerateResponse:
        call = generate_call(request, source="grpc", request_id=request.request_id or str(uuid.uuid4()))
        return generate_response(await self._inference.generate_all(call, current_principal()))

    async def GenerateStream(self, request: pb.GenerateRequest, context):
        call = generate_call(request, source="grpc", request_id=request.request_id or str(uuid.uuid4()))
        async for chunk in self._inference.generate(call, current_principal()):
            yield pb.GenerateChunk(
                request_id=call.request_id,
                text_delta=chunk.text,
                finish_reason=chunk.finish_reason or "",
                prompt_tokens=chunk.prompt_tokens,
                completion_tokens=chunk.completion_tokens,
                served_model=chunk.served_model,
                model_version=str(chunk.model_version),
                citations=citations_to_proto(chunk.passages, chunk.citations),
            )

    async def SetUsageLimit(self, request: pb.SetUsageLimitRequest, context) -> pb.UsageLimit:
        limit = usage_limit_from_proto(request.limit)
        return usage_limit_to_proto(await self._meter().set_limit(limit, current_principal(), remove=request.remove))

    async def ListUsageLimits(self, request: pb.ListUsageLimitsRequest, context) -> pb.ListUsageLimitsResponse:
        endpoint = limits_scope(request.endpoint, request.every_endpoint)
        limits = await self._meter().list_limits(endpoint, current_principal())
        return pb.ListUsageLimitsResponse(limits=[usage_limit_to_proto(limit) for limit in limits])

    async def GetUsage(self, request: pb.GetUsageRequest, context) -> pb.GetUsageResponse:
        principal = current_principal()
        rows = await self._meter().usage(
            request.endpoint,
            request.principal or ("" if request.endpoint else principal.name),
            request.start.ToDatetime(tzinfo=UTC) if request.HasField("start") else None,
            request.end.ToDatetime(tzinfo=UTC) if request.HasField("end") else None,
            principal,
        )
        return pb.GetUsageResponse(rows=[usage_row_to_proto(row) for row in rows])

    def _meter(self) -> UsageMeter:
        if self._inference.usage is None:
            raise Unavailable("usage metering is not configured in this process")
        return self._inference.usage
