"""Calls the serving service with the stock `tritonclient[grpc]`, in a child interpreter.

tritonclient ships its own compiled copy of the OIP protos; protobuf refuses to
register the same `inference.*` symbols twice in one process, and the serving
service (in the pytest process) uses Tessera's. So the tests run this script:

    python -m tests.integration.serving.tritonclient_calls URL TOKEN LLM_ENDPOINT TENSOR_ENDPOINT

and get one JSON object back on stdout with what each call answered.
"""

from __future__ import annotations

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def main(url: str, token: str, llm: str, tensor: str) -> dict:
    headers = {"authorization": f"Bearer {token}"}
    client = triton.InferenceServerClient(url)
    out: dict = {
        "live": client.is_server_live(headers=headers),
        "ready": client.is_server_ready(headers=headers),
        "server": client.get_server_metadata(headers=headers, as_json=True),
        "llm_ready": client.is_model_ready(llm, headers=headers),
        "llm_metadata": client.get_model_metadata(llm, headers=headers, as_json=True),
        "tensor_metadata": client.get_model_metadata(tensor, headers=headers, as_json=True),
    }

    prompt = triton.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"Return a sorted list."], dtype=object))
    params = {"max_tokens": 12, "temperature": 0.0, "seed": 1}
    result = client.infer(llm, [prompt], request_id="triton-bytes-1", parameters=params, headers=headers)
    out["bytes_infer"] = {
        "id": result.get_response().id,
        "text": result.as_numpy("text_output")[0].decode(),
        "completion_tokens": result.get_response().parameters["completion_tokens"].int64_param,
    }

    features = triton.InferInput("features", [2, 4], "FP32")
    features.set_data_from_numpy(np.array([[1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32))
    category = triton.InferInput("category", [2], "INT64")
    category.set_data_from_numpy(np.array([10, 20], dtype=np.int64))
    scored = client.infer(tensor, [features, category], request_id="triton-fp32-1", headers=headers)
    out["fp32_infer"] = {
        "id": scored.get_response().id,
        "version": scored.get_response().model_version,
        "score": scored.as_numpy("score").tolist(),
        "datatype": scored.get_output("score").datatype,
    }

    out["repository_index"] = client.get_model_repository_index(headers=headers, as_json=True)
    out["tensor_config"] = client.get_model_config(tensor, headers=headers, as_json=True)
    out["tensor_statistics"] = client.get_inference_statistics(tensor, headers=headers, as_json=True)

    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)), headers=headers)
    client.async_stream_infer(llm, [prompt], request_id="triton-stream-1", parameters=params)
    deltas, finals = [], []
    while True:
        result, error = responses.get(timeout=120)
        if error is not None:
            out["stream_error"] = str(error)
            break
        response = result.get_response()
        deltas.append(result.as_numpy("text_output")[0].decode())
        final = response.parameters["triton_final_response"].bool_param
        finals.append(final)
        if final:
            break
    client.async_stream_infer("no-such-endpoint", [prompt], request_id="triton-stream-missing")
    result, error = responses.get(timeout=60)
    out["stream_missing_error"] = str(error) if error is not None else None
    client.stop_stream()
    out["stream"] = {"deltas": deltas, "finals": finals}

    try:
        client.infer("no-such-endpoint", [prompt], request_id="triton-missing-1", headers=headers)
        out["missing"] = None
    except InferenceServerException as exc:
        out["missing"] = {"status": exc.status(), "message": exc.message()}
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
