"""`inference.GRPCInferenceService` (Open Inference Protocol, Triton's superset) over the core.

The OIP model name is the endpoint name. LLM endpoints take a BYTES `text_input`
and answer a BYTES `text_output`; `ModelStreamInfer` streams text deltas
(Triton's decoupled mode: the last response carries `triton_final_response`).
Tensor endpoints take and return named FP32/INT64 tensors.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc

from services.common.auth import current_principal
from services.common.errors import NotFound, TesseraError, Unavailable
from services.serving import oip_codec
from services.serving.endpoints import EndpointControl
from services.serving.entities import LLM, READY, GenerateCall, TensorCall
from services.serving.inference import InferenceCore

SERVICE_NAME = "inference.GRPCInferenceService"
SERVER_NAME = "tessera-serving"
SERVER_VERSION = "0.1.0"
_PLATFORMS = {"llm": "vllm", "tensor": "pytorch_libtorch"}


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
            return self._text_response(request, request_id, text.text, text, final=None)
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
        """Each request streams its responses; requests on one stream run concurrently."""
        responses: asyncio.Queue = asyncio.Queue()
        principal = current_principal()
        running: set[asyncio.Task] = set()

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
                task = asyncio.create_task(serve(request))
                running.add(task)
                task.add_done_callback(running.discard)
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
            return oip_codec.decode_inputs(request)
        except TesseraError as exc:
            # Refused before the core saw it: still one payload-log record.
            self._inference.log_rejected(request_id, request.model_name, "oip", current_principal(), exc)
            raise

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
