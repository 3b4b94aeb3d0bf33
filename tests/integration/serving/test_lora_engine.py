"""LoRA adapters on the real vLLM (CPU) engine: a peft adapter over the tiny Llama, served on the base engine.

The anchor is the same adapter applied by transformers + peft: greedy tokens through the
engine with the adapter equal peft's, and differ from the base model's.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed: run `bash infra/vllm/install.sh`")
peft = pytest.importorskip("peft")

from services.fixtures.tiny_llama import build_tiny_llama  # noqa: E402
from services.serving.llm_engine import Adapter, EngineSettings, InvalidRequest, Sampling, VllmEngine  # noqa: E402

pytestmark = pytest.mark.integration

PROMPT = "Return a sorted list of the items."
TOKENS = 8


def build_adapter(base: Path, out: Path) -> Path:
    """A rank-8 adapter on the attention and MLP projections, with random (not zero) B so it changes the output."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    config = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
    )
    peft.get_peft_model(model, config).save_pretrained(out)
    return out


def peft_greedy(base: Path, adapter: Path | None) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    if adapter is not None:
        model = peft.PeftModel.from_pretrained(model, adapter)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
    return out[0, ids.shape[1] :].tolist()


async def engine_greedy(engine: VllmEngine, adapter: Adapter | None) -> list[int]:
    tokens: list[int] = []
    sampling = Sampling(temperature=0.0, max_tokens=TOKENS, ignore_eos=True)
    async for chunk in engine.generate(f"r-{id(adapter)}", PROMPT, sampling, adapter=adapter):
        tokens.extend(chunk.token_ids)
    return tokens


async def test_an_adapter_on_the_base_engine_answers_what_peft_answers() -> None:
    base = build_tiny_llama()
    folder = build_adapter(base, Path(tempfile.mkdtemp(prefix="lora-")) / "adapter")
    expected_base, expected_adapted = (
        await asyncio.to_thread(peft_greedy, base, None),
        await asyncio.to_thread(peft_greedy, base, folder),
    )
    engine = VllmEngine(base, EngineSettings(kv_cache_bytes=64 * 2**20, max_model_len=512, max_loras=2))
    await engine.start()
    try:
        adapter = Adapter("capitals", 1, str(folder))
        adapted = await engine_greedy(engine, adapter)
        plain = await engine_greedy(engine, None)
    finally:
        await engine.stop()

    assert expected_adapted != expected_base  # the adapter matters
    assert plain == expected_base
    assert adapted == expected_adapted


async def test_an_engine_without_adapters_refuses_one() -> None:
    engine = VllmEngine(build_tiny_llama(), EngineSettings(kv_cache_bytes=64 * 2**20, max_model_len=512))
    await engine.start()
    try:
        with pytest.raises(InvalidRequest):
            await engine_greedy(engine, Adapter("x", 1, "/nowhere"))
    finally:
        await engine.stop()
