"""`inference.GRPCInferenceService` (Open Inference Protocol, Triton's superset) over the core.

The OIP model name is the endpoint name. LLM endpoints take a BYTES `text_input`
and answer a BYTES `text_output`; `ModelStreamInfer` streams text deltas
(Triton's decoupled mode: the last response carries `triton_final_response`).
Tensor endpoints take and return named FP32/INT64 tensors.

Of Triton's extensions, `RepositoryIndex` lists the endpoints the caller may
call with the state of each served version, `ModelConfig` describes one from its
model's signature, and `ModelStatistics` reports what each loaded version did
since it loaded (shared by every endpoint serving that version).
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc, model_config_pb2

from services.common.auth import Principal, current_principal
from services.common.errors import NotFound, TesseraError, Unavailable
from services.serving import oip_codec
from services.serving.deployment import Route
from services.serving.endpoints import EndpointControl
from services.serving.entities import (
    FAILED,
    LLM,
    LOADING,
    READY,
    EndpointView,
    GenerateCall,
    TensorCall,
)
from services.serving.inference import InferenceCore

SERVICE_NAME = "inference.GRPCInferenceService"
SERVER_NAME = "tessera-serving"
SERVER_VERSION = "0.1.0"
_PLATFORMS = {"llm": "vllm", "tensor": "pytorch_libtorch"}
_BACKENDS = {"llm": "vllm", "tensor": "pytorch"}
_CONFIG_TYPES = {
    "FP32": model_config_pb2.TYPE_FP32,
    "FP64": model_config_pb2.TYPE_FP64,
    "INT64": model_config_pb2.TYPE_INT64,
    "INT32": model_config_pb2.TYPE_INT32,
    "BOOL": model_config_pb2.TYPE_BOOL,
    "BYTES": model_config_pb2.TYPE_STRING,
}
# Triton's model states for ours.
_INDEX_STATES = {READY: "READY", LOADING: "LOADING", FAILED: "UNAVAILABLE"}
# Requests of one ModelStreamInfer stream running at once, and responses waiting for the client.
MAX_STREAM_IN_FLIGHT = 16
MAX_STREAM_BACKLOG = 64
# RepositoryIndex and ModelStatistics without a name look at no more endpoints than this (by name).
MAX_INDEXED_ENDPOINTS = 1000


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, endpoints: EndpointControl, inference: InferenceCore) -> None:
        self._endpoints = endpoints
        self._inference = inference
        self.ready = True

    async def ServerLive(self, request, context) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.ready)

    async def ServerMetadata(self, request, context) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    async def ModelReady(self, request: oip.ModelReadyRequest, context) -> oip.ModelReadyResponse:
        deployment = await self._endpoints.shown(request.name, current_principal())
        ready = [r for r in deployment.routes if r.state == READY and r.model is not None]
        if request.version:
            ready = [r for r in ready if str(r.model.version) == request.version]
        return oip.ModelReadyResponse(ready=bool(ready))

    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context) -> oip.ModelMetadataResponse:
        deployment = await self._endpoints.callable(request.name, current_principal())
        ready = [r for r in deployment.routes if r.state == READY and r.model is not None]
        if request.version:
            ready = [r for r in ready if str(r.model.version) == request.version]
            if not ready:
                raise NotFound(f"endpoint {request.name!r} serves no version {request.version}")
        if not ready:
            raise Unavailable(f"endpoint {request.name!r} is not ready yet")
        runtime = ready[0].model.runtime
        response = oip.ModelMetadataResponse(
            name=request.name,
            versions=sorted({str(r.model.version) for r in ready}),
            platform=_PLATFORMS.get(runtime.kind, runtime.kind),
        )
        for spec in runtime.inputs():
            response.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        for spec in runtime.outputs():
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        return response

    async def ModelInfer(self, request: oip.ModelInferRequest, context) -> oip.ModelInferResponse:
        request_id = request.id or str(uuid.uuid4())
        tensors = self._decode(request, request_id)
        if self._is_llm(request.model_name, tensors):
            call = self._generate_call(request, request_id, tensors)
            text = await self._inference.generate_all(call, current_principal())
            response = self._text_response(request, request_id, text.text, text, final=None)
            if text.citations:  # an agent's: the cited document ids, best first
                oip_codec.add_output(
                    response, "citations", np.array([c.encode() for c in text.citations], dtype=object)
                )
            return response
        result = await self._inference.infer(
            TensorCall(request.model_name, request_id, "oip", tensors, size_bytes=request.ByteSize()),
            current_principal(),
        )
        response = oip.ModelInferResponse(
            model_name=request.model_name, model_version=str(result.model_version), id=request_id
        )
        wanted = [o.name for o in request.outputs]
        for name, array in result.outputs.items():
            if not wanted or name in wanted:
                oip_codec.add_output(response, name, array)
        return response

    async def ModelStreamInfer(self, request_iterator, context):
        """Each request streams its responses; up to MAX_STREAM_IN_FLIGHT requests of a stream run at once.

        A client that stops reading stops the stream: its responses wait in a bounded queue,
        which holds back the requests producing them, which holds back reading more requests.
        """
        responses: asyncio.Queue = asyncio.Queue(MAX_STREAM_BACKLOG)
        principal = current_principal()
        running: set[asyncio.Task] = set()
        slots = asyncio.Semaphore(MAX_STREAM_IN_FLIGHT)

        async def serve(request: oip.ModelInferRequest) -> None:
            request_id = request.id or str(uuid.uuid4())
            try:
                tensors = self._decode(request, request_id)
                if not self._is_llm(request.model_name, tensors):
                    await responses.put(
                        oip.ModelStreamInferResponse(infer_response=await self._unary(request, principal))
                    )
                    return
                call = self._generate_call(request, request_id, tensors)
                async for chunk in self._inference.generate(call, principal):
                    response = self._text_response(request, request_id, chunk.text, chunk, final=chunk.finished)
                    await responses.put(oip.ModelStreamInferResponse(infer_response=response))
            except TesseraError as exc:
                await responses.put(_stream_error(request, request_id, exc.message))
            except Exception:  # noqa: BLE001 - one request's failure must not end the stream
                await responses.put(_stream_error(request, request_id, "internal error; see the service log"))

        async def read() -> None:
            async for request in request_iterator:
                await slots.acquire()
                task = asyncio.create_task(serve(request))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _t: slots.release())
            await asyncio.gather(*list(running))
            await responses.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await responses.get()) is not None:
                yield item
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def RepositoryIndex(self, request: oip.RepositoryIndexRequest, context) -> oip.RepositoryIndexResponse:
        """The endpoints the caller may call: one entry per served version, with its state."""
        response = oip.RepositoryIndexResponse()
        for view in await self._callable_views(current_principal()):
            name = view.stored.spec.name
            if not view.served and not request.ready:  # stored, not deployed in this replica yet
                response.models.add(name=name, state="LOADING", reason=view.reason)
            for served in view.served:
                state = _INDEX_STATES.get(served.state, "UNAVAILABLE")
                if request.ready and state != "READY":
                    continue
                version = str(served.version) if served.version else ""
                response.models.add(name=name, version=version, state=state, reason=served.reason)
        return response

    async def ModelConfig(self, request: oip.ModelConfigRequest, context) -> oip.ModelConfigResponse:
        """The endpoint's configuration, from the signature of the model it serves."""
        await self._require_callable(request.name, current_principal())
        runtime = self._ready_routes(request.name, request.version)[0].model.runtime
        config = model_config_pb2.ModelConfig(
            name=request.name,
            platform=_PLATFORMS.get(runtime.kind, runtime.kind),
            backend=_BACKENDS.get(runtime.kind, runtime.kind),
            max_batch_size=0,  # shapes name their batch dimension themselves
        )
        for spec in runtime.inputs():
            config.input.add(name=spec.name, data_type=_CONFIG_TYPES.get(spec.datatype, 0), dims=list(spec.shape))
        for spec in runtime.outputs():
            config.output.add(name=spec.name, data_type=_CONFIG_TYPES.get(spec.datatype, 0), dims=list(spec.shape))
        return oip.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: oip.ModelStatisticsRequest, context) -> oip.ModelStatisticsResponse:
        """Counts and durations per loaded version; without a name, of every endpoint the caller may call."""
        principal = current_principal()
        if request.name:
            await self._require_callable(request.name, principal)
            names = [request.name]
        else:
            names = [view.stored.spec.name for view in await self._callable_views(principal)]
        response = oip.ModelStatisticsResponse()
        for name in names:
            try:
                routes = self._ready_routes(name, request.version)
            except TesseraError:
                if request.name:
                    raise
                continue  # not ready here: nothing to report
            for route in routes:
                stats = route.model.runtime.statistics
                entry = response.model_stats.add(
                    name=name,
                    version=str(route.model.version),
                    last_inference=stats.last_inference_ms,
                    inference_count=stats.inference_count,
                    execution_count=stats.execution_count,
                )
                entry.inference_stats.success.count = stats.success_count
                entry.inference_stats.success.ns = stats.success_ns
                entry.inference_stats.fail.count = stats.fail_count
                entry.inference_stats.fail.ns = stats.fail_ns
        return response

    async def _unary(self, request: oip.ModelInferRequest, principal) -> oip.ModelInferResponse:
        from services.common.auth import reset_principal, set_principal

        token = set_principal(principal)
        try:
            return await self.ModelInfer(request, None)
        finally:
            reset_principal(token)

    # -- helpers -----------------------------------------------------------------

    def _decode(self, request: oip.ModelInferRequest, request_id: str) -> dict[str, np.ndarray]:
        try:
            return oip_codec.decode_inputs(request, max_request_bytes=self._inference.limits.max_request_bytes)
        except TesseraError as exc:
            # Refused before the core saw it: still one payload-log record.
            self._inference.log_rejected(request_id, request.model_name, "oip", current_principal(), exc)
            raise

    def _ready_routes(self, name: str, version: str) -> list[Route]:
        deployment = self._endpoints.deployment(name)
        ready = [r for r in deployment.routes if r.state == READY and r.model is not None]
        if version:
            ready = [r for r in ready if str(r.model.version) == version]
            if not ready:
                raise NotFound(f"endpoint {name!r} serves no version {version[:20]}")
        if not ready:
            raise Unavailable(f"endpoint {name!r} is not ready yet")
        return ready

    async def _callable_views(self, principal: Principal) -> list[EndpointView]:
        """The endpoints `principal` may call, among the first MAX_INDEXED_ENDPOINTS it may see."""
        views: list[EndpointView] = []
        token = ""
        while len(views) < MAX_INDEXED_ENDPOINTS:
            page = await self._endpoints.list(principal, min(500, MAX_INDEXED_ENDPOINTS - len(views)), token)
            views.extend(page.items)
            if not page.next_token:
                break
            token = page.next_token
        return [view for view in views if await self._endpoints.may_call(view.stored.spec.name, principal)]

    async def _require_callable(self, name: str, principal: Principal) -> None:
        await self._endpoints.callable(name, principal)

    def _is_llm(self, endpoint: str, tensors: dict[str, np.ndarray]) -> bool:
        return oip_codec.is_text_request(tensors) or self._inference.kind_of(endpoint) == LLM

    def _generate_call(self, request: oip.ModelInferRequest, request_id: str, tensors) -> GenerateCall:
        try:
            prompt = oip_codec.prompt_of(tensors)
            sampling = oip_codec.sampling_of(request, tensors)
        except TesseraError as exc:
            self._inference.log_rejected(request_id, request.model_name, "oip", current_principal(), exc)
            raise
        return GenerateCall(
            request.model_name, request_id, "oip", prompt=prompt, sampling=sampling, size_bytes=request.ByteSize()
        )

    @staticmethod
    def _text_response(request, request_id: str, text: str, chunk, final: bool | None) -> oip.ModelInferResponse:
        response = oip.ModelInferResponse(
            model_name=request.model_name, model_version=str(chunk.model_version) if chunk else "", id=request_id
        )
        oip_codec.add_output(response, "text_output", np.array([text.encode()], dtype=object))
        if chunk is not None:
            response.parameters["prompt_tokens"].int64_param = chunk.prompt_tokens
            response.parameters["completion_tokens"].int64_param = chunk.completion_tokens
            if chunk.finish_reason:
                response.parameters["finish_reason"].string_param = chunk.finish_reason
        if final is not None:
            response.parameters["triton_final_response"].bool_param = final
        return response


def _stream_error(request, request_id: str, message: str) -> oip.ModelStreamInferResponse:
    return oip.ModelStreamInferResponse(
        error_message=message,
        infer_response=oip.ModelInferResponse(model_name=request.model_name, id=request_id),
    )
