"""The made-up capitals task's exact-match score, answered by serving's vLLM runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.fixtures import capitals


async def exact_match_served(model_dir: Path) -> tuple[float, dict[str, str]]:
    """Greedy answers of the model in `model_dir` (loaded by serving's vLLM engine) and their exact match."""
    from services.serving.llm_engine import EngineSettings, Sampling, VllmEngine

    engine = VllmEngine(model_dir, EngineSettings(max_model_len=256, max_num_seqs=8, kv_cache_bytes=64 * 2**20))
    await engine.start()
    try:
        greedy = Sampling(temperature=0.0, max_tokens=12, seed=0)

        async def answer(i: int, country: str) -> str:
            messages = [{"role": "user", "content": capitals.question(country)}]
            chunks = [c async for c in engine.generate(f"q{i}", messages, greedy, stream=False)]
            return chunks[-1].text

        # All questions at once: the engine batches them.
        async with asyncio.timeout(120):
            texts = await asyncio.gather(*(answer(i, c) for i, (c, _capital) in enumerate(capitals.COUNTRIES)))
        answers = {country: text for (country, _capital), text in zip(capitals.COUNTRIES, texts, strict=True)}
        return capitals.exact_match(answers), answers
    finally:
        await engine.stop()
