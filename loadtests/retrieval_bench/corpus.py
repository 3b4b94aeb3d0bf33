"""The bench's data: clustered vectors (make_blobs) and real passages (standard-library docstrings)."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import numpy as np


def clustered_vectors(count: int, queries: int, dim: int, centers: int = 100, seed: int = 42):
    """Unit-length vectors in `centers` clusters, plus held-out queries from the same distribution."""
    from sklearn.datasets import make_blobs

    points, _ = make_blobs(
        n_samples=count + queries,
        n_features=dim,
        centers=centers,
        cluster_std=4.0,
        center_box=(-10, 10),
        random_state=seed,
    )
    points = points.astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points[:count], points[count:]


def stdlib_docstrings(limit: int, min_chars: int = 80, max_chars: int = 1200) -> list[tuple[str, str]]:
    """(qualified name, docstring) pairs parsed (not imported) from the standard library's sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        if any(part in {"test", "tests", "site-packages", "idle_test", "__pycache__"} for part in path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        nodes = [("", tree)] + [
            (node.name, node)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        for name, node in nodes:
            doc = ast.get_docstring(node)
            if not doc or len(doc) < min_chars:
                continue
            doc = " ".join(doc.split())[:max_chars]
            if doc in seen:
                continue
            seen.add(doc)
            found.append((f"{module}.{name}".rstrip("."), doc))
            if len(found) >= limit:
                return found
    return found


def brute_force_top_k(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact cosine top-k (rows are unit length), by NumPy."""
    scores = queries @ corpus.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def recall_at_k(found: list[list[str]], truth: np.ndarray, ids: list[str] | np.ndarray) -> float:
    hits = total = 0
    for got, expected in zip(found, truth, strict=True):
        want = {ids[i] for i in expected}
        hits += len(want & set(got))
        total += len(want)
    return hits / total if total else float("nan")
