"""The embedding runtime: a sentence-transformers model folder behind an endpoint.

Loading and encoding are retrieval's (`services/retrieval/embeddings.py`), so a
vector served here equals the one retrieval stores for the same text. Input the
model would cut (over its own token limit) is refused, never silently shortened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument
from services.retrieval.embeddings import SentenceTransformerEmbedder
from services.serving.entities import EMBEDDING, SamplingSpec, TensorSpec, TextChunk
from services.serving.runtimes.base import RuntimeStatistics

TEXT_INPUT = TensorSpec("text_input", "BYTES", (-1,))


class EmbeddingRuntime:
    kind = EMBEDDING

    def __init__(self, folder: Path, batch_size: int = 64) -> None:
        self._folder = folder
        self._embedder = SentenceTransformerEmbedder(folder.name, folder, batch_size)
        self.statistics = RuntimeStatistics()
        self.dimension = 0
        self.max_tokens = 0

    async def start(self) -> None:
        # The load takes seconds: off the loop. Dimension and token limit are fixed from here on.
        self.dimension = await asyncio.to_thread(lambda: self._embedder.dimension)
        self.max_tokens = self._embedder.max_tokens

    async def stop(self) -> None:
        return None

    def inputs(self) -> Sequence[TensorSpec]:
        return (TEXT_INPUT,)

    def outputs(self) -> Sequence[TensorSpec]:
        return (TensorSpec("embedding", "FP32", (-1, self.dimension)),)

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Unit vectors for `texts` and the tokens they took; InvalidArgument for a text over the model's limit."""
        started, ok = time.perf_counter_ns(), False
        try:
            counts = await asyncio.to_thread(self._embedder.token_counts, list(texts))
            over = [i for i, count in enumerate(counts) if count > self.max_tokens]
            if over:
                raise InvalidArgument(
                    f"input {over[0]} is {counts[over[0]]} tokens, over the model's limit of {self.max_tokens}",
                    field="input",
                )
            vectors = await self._embedder.embed(list(texts))
            ok = True
            return vectors, sum(counts)
        finally:
            self.statistics.record(ok, time.perf_counter_ns() - started, len(texts))

    async def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """OIP: BYTES `text_input` (one text per element) -> FP32 `embedding`."""
        if set(tensors) != {"text_input"}:
            raise InvalidArgument("this endpoint serves an embedding model: send BYTES 'text_input'")
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in np.asarray(tensors["text_input"]).ravel()]
        vectors, _tokens = await self.embed(texts)
        return {"embedding": vectors}

    async def generate(
        self, request_id: str, prompt: str | Sequence[Mapping[str, str]], sampling: SamplingSpec
    ) -> AsyncIterator[TextChunk]:
        raise FailedPrecondition("this endpoint serves an embedding model: use /v1/embeddings")
        yield  # an async generator, like every runtime's generate
