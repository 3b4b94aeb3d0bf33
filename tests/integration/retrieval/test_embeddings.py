"""Managed embeddings: the bundled all-MiniLM-L6-v2, loaded offline, batching concurrent callers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.retrieval.embeddings import DEFAULT_MODEL, EmbeddingModels, SentenceTransformerEmbedder

pytestmark = pytest.mark.integration


async def test_concurrent_callers_share_batches_and_get_their_own_vectors():
    registry = EmbeddingModels()
    embedder = registry.get(DEFAULT_MODEL)
    assert isinstance(embedder, SentenceTransformerEmbedder) and embedder.dimension == 384
    texts = [f"sentence number {i} about {topic}" for i, topic in enumerate(["cats", "ships", "bread", "rain"] * 4)]
    alone = [await embedder.embed([t]) for t in texts]

    batches = []
    encode = embedder._encode

    def counting(batch):
        batches.append(len(batch))
        return encode(batch)

    embedder._encode = counting
    together = await asyncio.gather(*(embedder.embed([t]) for t in texts))
    assert sum(batches) == len(texts) and len(batches) < len(texts)
    for one, shared in zip(alone, together, strict=True):
        assert shared.shape == (1, 384)
        np.testing.assert_allclose(one, shared, atol=1e-5)
    assert abs(float(np.linalg.norm(together[0])) - 1.0) < 1e-4


def test_unknown_models_are_a_clear_error(tmp_path):
    with pytest.raises(InvalidArgument, match="unknown embedding model"):
        EmbeddingModels().get("no-such-model")
    with pytest.raises(ValueError, match="not a folder"):
        EmbeddingModels({"mine": tmp_path / "missing"})
