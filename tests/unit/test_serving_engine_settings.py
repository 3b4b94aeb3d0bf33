"""Per-served-model engine settings and LoRA adapter versions: stored form, bounds, tags, adapter folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tessera.registry.v1 import registry_pb2 as rpb

from services.common.errors import FailedPrecondition, InvalidArgument
from services.serving.entities import BASE_MODEL_TAG, EndpointSpec, EngineBounds, EngineSpec, ServedModelSpec
from services.serving.llm_engine import EngineSettings
from services.serving.registry_catalog import _base_of
from services.serving.runtimes.factory import engine_settings
from services.serving.runtimes.llm import adapter_rank
from services.serving.settings import ServingSettings

BOUNDS = EngineBounds(max_model_len=4096, max_num_seqs=64, kv_cache_mib=1024, max_loras=8, max_lora_rank=64)


def test_a_served_model_keeps_its_engine_settings_through_the_store_json() -> None:
    spec = ServedModelSpec("c.s.m", 1, engine=EngineSpec(max_num_seqs=4, enable_prefix_caching=False, max_loras=2))

    again = ServedModelSpec.from_json(json.loads(json.dumps(spec.to_json())))

    assert again == spec
    assert spec.to_json()["engine"] == {"max_num_seqs": 4, "enable_prefix_caching": False, "max_loras": 2}


def test_rows_stored_before_engine_settings_read_as_defaults() -> None:
    old = {"model_name": "c.s.m", "version": 2, "alias": None, "traffic_percent": 100}

    spec = ServedModelSpec.from_json(old)

    assert spec.engine.is_default() and "engine" not in spec.to_json()


def test_validation_keeps_the_engine_settings() -> None:
    spec = EndpointSpec("e", (ServedModelSpec("c.s.m", 1, traffic_percent=0, engine=EngineSpec(max_loras=1)),))

    assert spec.validated().served_models[0].engine == EngineSpec(max_loras=1)


@pytest.mark.parametrize(
    "engine",
    [
        EngineSpec(max_model_len=4097),
        EngineSpec(max_num_seqs=0),
        EngineSpec(kv_cache_mib=-1),
        EngineSpec(max_loras=9),
        EngineSpec(max_lora_rank=128),
        EngineSpec(max_lora_rank=12),
    ],
)
def test_settings_beyond_the_operators_bounds_are_invalid(engine: EngineSpec) -> None:
    with pytest.raises(InvalidArgument):
        BOUNDS.check(engine, "c.s.m")


def test_settings_within_bounds_pass() -> None:
    BOUNDS.check(EngineSpec(max_model_len=4096, max_num_seqs=64, kv_cache_mib=1, max_loras=8, max_lora_rank=64), "m")


def test_the_served_models_settings_go_over_the_process_defaults() -> None:
    settings = ServingSettings(serving_max_loras=3, serving_max_lora_rank=32)
    defaults = EngineSettings(kv_cache_bytes=256 * 2**20, max_model_len=2048, max_num_seqs=32)

    assert engine_settings(defaults, EngineSpec(), settings) is defaults
    merged = engine_settings(defaults, EngineSpec(kv_cache_mib=64, max_num_seqs=2), settings)
    assert (merged.kv_cache_bytes, merged.max_num_seqs, merged.max_model_len, merged.max_loras) == (
        64 * 2**20,
        2,
        2048,
        0,
    )
    lora = engine_settings(defaults, EngineSpec(max_lora_rank=8), settings)
    assert (lora.max_loras, lora.max_lora_rank) == (3, 8)


def _version(tag: str | None) -> rpb.ModelVersion:
    version = rpb.ModelVersion(model_name="c.s.adapter", version=2)
    if tag is not None:
        version.tags[BASE_MODEL_TAG] = tag
    return version


def test_the_base_model_tag_names_a_pinned_version() -> None:
    assert _base_of(_version(None)) == ("", 0)
    assert _base_of(_version("c.s.base/3")) == ("c.s.base", 3)
    for bad in ("c.s.base", "c.s.base/champion", "c.s.base/0", "/3"):
        with pytest.raises(FailedPrecondition):
            _base_of(_version(bad))


def test_an_adapter_folder_gives_its_rank_and_anything_else_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="adapter_config.json"):
        adapter_rank(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
    with pytest.raises(FailedPrecondition, match="weights"):
        adapter_rank(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    assert adapter_rank(tmp_path) == 16
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING", "r": 16}))
    with pytest.raises(FailedPrecondition, match="LoRA"):
        adapter_rank(tmp_path)
