"""Synthetic LLM payload logs, serialized fast: a per-record head (ids, timings, tokens, time)
concatenated with one of a few pre-serialized bodies (prompt, completion, labels).
Protobuf parses concatenated messages as their merge, so the bytes are a valid PayloadLog."""

from __future__ import annotations

import numpy as np
from tessera.events.v1.payload_log_pb2 import PayloadLog

FEATURES_NUMERIC = ("latency_ms", "time_to_first_token_ms", "prompt_tokens", "completion_tokens", "prompt_length")
FEATURES_CATEGORICAL = ("status",)


class PayloadLogFactory:
    def __init__(self, endpoint: str, seed: int = 0) -> None:
        self.endpoint = endpoint
        self.rng = np.random.default_rng(seed)
        self._bodies = []
        self._prompt_lengths = []
        for i in range(32):
            body = PayloadLog(served_model="main.default.chat", model_version="3", source="grpc")
            length = 40 + 25 * i
            body.inputs.update({"prompt": "p" * length, "temperature": 0.7})
            body.outputs.update({"text": "c" * (100 + 7 * i)})
            body.labels["region"] = ("eu", "us", "ap")[i % 3]
            self._bodies.append(body.SerializeToString())
            self._prompt_lengths.append(length)
        self.sequence = 0

    def batch(self, n: int, event_times: np.ndarray, latency_mean: float = 200.0) -> tuple[list[bytes], dict]:
        """`n` records; returns their bytes and the feature columns (for the anchor)."""
        latency = np.abs(self.rng.normal(latency_mean, 40.0, n))
        ttft = latency * self.rng.uniform(0.1, 0.3, n)
        prompt_tokens = self.rng.poisson(60, n)
        completion_tokens = self.rng.poisson(120, n)
        bodies = self.rng.integers(0, len(self._bodies), n)
        statuses = np.where(self.rng.random(n) < 0.02, "RESOURCE_EXHAUSTED", "OK")
        out = []
        for i in range(n):
            head = PayloadLog(
                request_id=f"{self.endpoint}-{self.sequence}",
                endpoint=self.endpoint,
                status=str(statuses[i]),
                latency_ms=float(latency[i]),
                time_to_first_token_ms=float(ttft[i]),
                prompt_tokens=int(prompt_tokens[i]),
                completion_tokens=int(completion_tokens[i]),
            )
            head.timestamp.FromNanoseconds(int(event_times[i] * 1e9))
            self.sequence += 1
            out.append(head.SerializeToString() + self._bodies[bodies[i]])
        columns = {
            "latency_ms": latency,
            "time_to_first_token_ms": ttft,
            "prompt_tokens": prompt_tokens.astype(np.float64),
            "completion_tokens": completion_tokens.astype(np.float64),
            "prompt_length": np.asarray(self._prompt_lengths, dtype=np.float64)[bodies],
            "status": statuses.astype(str),
        }
        return out, columns
