"""The serving engine adapter on the real vLLM engine (CPU build), with a tiny local Llama."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest
import pytest_asyncio

from services.fixtures.tiny_llama import build_tiny_llama
from services.serving.llm_engine import EngineSettings, GenerationChunk, InvalidRequest, Sampling, VllmEngine

# Looked up, not imported: importing vLLM costs seconds on every collection.
if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed: run `bash infra/vllm/install.sh`", allow_module_level=True)

pytestmark = pytest.mark.integration

PROMPT = "Return a new list containing all items from the iterable in ascending order."
GREEDY = Sampling(temperature=0.0, max_tokens=24, seed=42)
TIMEOUT = 120  # seconds; a hung engine fails the test instead of the run


@pytest_asyncio.fixture(scope="module")
async def engine() -> VllmEngine:
    llm = VllmEngine(build_tiny_llama(), EngineSettings(max_model_len=1024, max_num_seqs=16))
    await llm.start()
    yield llm
    await llm.stop()


async def collect(engine: VllmEngine, request_id: str, prompt, sampling: Sampling, **kw) -> list[GenerationChunk]:
    async with asyncio.timeout(TIMEOUT):
        return [chunk async for chunk in engine.generate(request_id, prompt, sampling, **kw)]


def text_of(chunks: list[GenerationChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


def tokens_of(chunks: list[GenerationChunk]) -> list[int]:
    # Chunk boundaries depend on timing (a slow reader gets merged deltas); the tokens do not.
    return [token for chunk in chunks for token in chunk.token_ids]


async def test_greedy_generation_with_a_seed_is_deterministic(engine: VllmEngine) -> None:
    first = await collect(engine, "greedy-1", PROMPT, GREEDY)
    second = await collect(engine, "greedy-2", PROMPT, GREEDY)

    assert text_of(first) and text_of(first) == text_of(second)
    assert tokens_of(first) == tokens_of(second)


async def test_seeded_sampling_is_deterministic(engine: VllmEngine) -> None:
    sampling = Sampling(temperature=0.9, top_p=0.95, max_tokens=24, seed=7)

    first = await collect(engine, "seeded-1", PROMPT, sampling)
    second = await collect(engine, "seeded-2", PROMPT, sampling)

    assert text_of(first) == text_of(second)


async def test_streamed_chunks_concatenate_to_the_final_text(engine: VllmEngine) -> None:
    streamed = await collect(engine, "stream", PROMPT, GREEDY)
    (final,) = await collect(engine, "whole", PROMPT, GREEDY, stream=False)

    assert len(streamed) > 1
    assert text_of(streamed) == final.text
    assert [c.finished for c in streamed] == [False] * (len(streamed) - 1) + [True]
    assert tokens_of(streamed) == list(final.token_ids)
    counts = [c.completion_tokens for c in streamed]
    assert counts == [len(tokens_of(streamed[: i + 1])) for i in range(len(streamed))]
    assert counts[-1] == final.completion_tokens
    assert streamed[0].prompt_tokens == final.prompt_tokens == len(engine.tokenize(PROMPT))


async def test_max_tokens_is_honoured_without_stop(engine: VllmEngine) -> None:
    # The weights are random, so EOS may come at any step: ignore it to test the limit alone.
    chunks = await collect(engine, "limit", PROMPT, Sampling(max_tokens=17, seed=3, ignore_eos=True))

    assert chunks[-1].finished and chunks[-1].finish_reason == "length"
    assert chunks[-1].completion_tokens == 17


async def test_a_stop_string_ends_the_text_before_it(engine: VllmEngine) -> None:
    reference = text_of(await collect(engine, "ref", PROMPT, GREEDY))
    stop = reference[4:8]

    chunks = await collect(engine, "stop", PROMPT, Sampling(temperature=0.0, max_tokens=24, stop=(stop,)))

    assert text_of(chunks) == reference[: reference.index(stop)]
    assert chunks[-1].finish_reason == "stop"


async def test_eight_concurrent_requests_all_complete(engine: VllmEngine) -> None:
    sampling = Sampling(temperature=0.8, max_tokens=32, ignore_eos=True)
    prompts = [f"{PROMPT} Request number {i}." for i in range(8)]

    results = await asyncio.gather(
        *(collect(engine, f"concurrent-{i}", prompt, sampling) for i, prompt in enumerate(prompts))
    )

    for chunks in results:
        assert chunks[-1].finished and chunks[-1].finish_reason == "length"
        assert chunks[-1].completion_tokens == 32


async def test_chat_messages_are_rendered_with_the_models_template(engine: VllmEngine) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sort a list."}]

    prompt = engine.apply_chat_template(messages)
    chunks = await collect(engine, "chat", messages, GREEDY)

    assert prompt == "<s><|system|>\nBe brief.</s>\n<|user|>\nSort a list.</s>\n<|assistant|>\n"
    assert chunks[-1].prompt_tokens == len(engine.tokenize(messages))
    assert chunks[-1].finished


async def test_abort_ends_a_running_request(engine: VllmEngine) -> None:
    chunks: list[GenerationChunk] = []
    async with asyncio.timeout(TIMEOUT):
        async for chunk in engine.generate("abort", PROMPT, Sampling(max_tokens=1000, ignore_eos=True)):
            chunks.append(chunk)
            if len(chunks) == 3:
                await engine.abort("abort")

    assert chunks[-1].finished and chunks[-1].finish_reason == "abort"
    assert chunks[-1].completion_tokens < 1000


@pytest.mark.parametrize(
    "sampling",
    [Sampling(temperature=-1.0), Sampling(top_p=0.0), Sampling(max_tokens=0)],
    ids=["negative-temperature", "zero-top-p", "zero-max-tokens"],
)
async def test_bad_sampling_values_are_invalid_requests(engine: VllmEngine, sampling: Sampling) -> None:
    with pytest.raises(InvalidRequest):
        await collect(engine, "bad", PROMPT, sampling)


async def test_a_prompt_longer_than_the_model_is_an_invalid_request(engine: VllmEngine) -> None:
    with pytest.raises(InvalidRequest, match="longer than the maximum model length"):
        await collect(engine, "too-long", "word " * 2000, Sampling(max_tokens=4))
