"""Datasets as registry securables, and every pre-flight refusal, on the real registry, Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.training.v1 import training_pb2 as pb

from services.common.auth import bearer
from services.fixtures import capitals
from services.fixtures.registry_client import RegistryClient
from services.fixtures.tiny_llama import build_tiny_llama
from services.training.dataset_rows import canonical, content_hash
from tests.integration.training.stack import ADMIN, ALICE, BOB

pytestmark = pytest.mark.integration


async def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def _eventually(call_factory, timeout: float = 90.0):
    """The call's reply once a grant has reached the service (its cache drops on the registry's event)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await call_factory()
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                    raise
            await asyncio.sleep(0.5)


async def _refusal(call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details()


async def test_a_dataset_version_is_immutable_content_addressed_and_described(stack, unique) -> None:
    dataset = await stack.create_dataset(f"qa_{unique}")
    rows = capitals.chat_rows()

    first = await stack.upload(dataset, rows)
    again = await stack.upload(dataset, rows)

    assert first.version == again.version == content_hash(canonical(rows))
    assert first.format == pb.ROW_FORMAT_CHAT and first.row_count == len(rows)
    assert dict(first.columns) == {"messages": "array"}
    other = await stack.upload(dataset, capitals.chat_rows(repeat=2))
    described = await stack.training.DescribeDataset(
        pb.DescribeDatasetRequest(full_name=dataset), metadata=bearer(ALICE)
    )
    assert described.owner == "alice"
    assert {v.version for v in described.versions} == {first.version, other.version}
    read = b"".join(
        [
            c.data
            async for c in stack.training.ReadDatasetVersion(
                pb.ReadDatasetVersionRequest(dataset=dataset, version=first.version), metadata=bearer(ALICE)
            )
        ]
    )
    assert [json.loads(line) for line in read.splitlines()] == rows


async def test_dataset_grants_select_to_read_and_modify_to_add_versions(stack, unique) -> None:
    dataset = await stack.create_dataset(f"granted_{unique}")
    version = await stack.upload(dataset, capitals.chat_rows())
    describe = pb.DescribeDatasetRequest(full_name=dataset)

    assert (
        await _code(stack.training.DescribeDataset(describe, metadata=bearer(BOB))) == grpc.StatusCode.PERMISSION_DENIED
    )
    assert await _code(stack.upload(dataset, capitals.chat_rows(2), token=BOB)) == grpc.StatusCode.PERMISSION_DENIED
    grant = rpb.GrantRequest(
        securable_type=rpb.SECURABLE_TYPE_DATASET,
        securable_full_name=dataset,
        principal="bob",
        privileges=[rpb.PRIVILEGE_SELECT],
    )
    await stack.registry.Grant(grant, metadata=bearer(ALICE))
    described = await _eventually(lambda: stack.training.DescribeDataset(describe, metadata=bearer(BOB)))
    assert [v.version for v in described.versions] == [version.version]
    # SELECT reads; adding a version still needs MODIFY.
    assert await _code(stack.upload(dataset, capitals.chat_rows(2), token=BOB)) == grpc.StatusCode.PERMISSION_DENIED
    # bob cannot create datasets in a schema where he lacks CREATE_MODEL.
    create = pb.CreateDatasetRequest(full_name=f"{stack.catalog}.{stack.schema}.bobs_{unique}")
    assert await _code(stack.training.CreateDataset(create, metadata=bearer(BOB))) == grpc.StatusCode.PERMISSION_DENIED


async def test_unreadable_and_mixed_rows_are_refused_with_row_numbers(stack, unique) -> None:
    dataset = await stack.create_dataset(f"bad_{unique}")
    good = json.dumps(capitals.chat_rows()[0]).encode()
    unreadable = good + b"\n{not json\n" + good + b"\n"
    mixed = good + b"\n" + json.dumps({"prompt": "a", "response": "b"}).encode() + b"\n"
    no_assistant = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode() + b"\n"

    assert "row 2: not valid JSON" in await _refusal(stack.upload(dataset, unreadable))
    assert "mixed formats: chat from row 1, prompt_response from row 2" in await _refusal(stack.upload(dataset, mixed))
    assert "row 1: no assistant message" in await _refusal(stack.upload(dataset, no_assistant))


async def test_preflight_reports_tokens_time_and_memory(stack, unique) -> None:
    dataset = await stack.create_dataset(f"pf_{unique}")
    version = await stack.upload(dataset, capitals.chat_rows())

    report = await stack.training.PreflightJob(
        pb.SubmitJobRequest(spec=stack.spec(dataset, version.version, f"pf_{unique}", method=pb.METHOD_LORA)),
        metadata=bearer(ALICE),
    )

    assert not report.problems
    assert report.train_rows == len(capitals.COUNTRIES) and report.train_tokens > report.trained_tokens > 0
    assert report.total_steps == 30 and report.estimated_seconds > 0 and report.estimated_peak_memory_bytes > 0
    assert 0 < report.trainable_parameters < report.base_parameters


async def _base_with_template(stack, name: str, template: str, tmp_path) -> str:
    """A copy of the tiny Llama whose chat template is `template`, registered as `name`."""
    import shutil

    folder = tmp_path / name
    shutil.copytree(build_tiny_llama(), folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = template
    config_path.write_text(json.dumps(config))
    model = f"{stack.catalog}.{stack.schema}.{name}"
    client = RegistryClient(stack.registry_address, ADMIN)
    await client.register(model, folder)
    await client.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "alice", [rpb.PRIVILEGE_EXECUTE])
    await client.channel.close()
    return model


async def test_preflight_refuses_what_would_train_badly(stack, unique, tmp_path) -> None:
    dataset = await stack.create_dataset(f"refuse_{unique}")
    version = (await stack.upload(dataset, capitals.chat_rows())).version
    target = f"refused_{unique}"

    def submit(**kw):
        return stack.training.SubmitJob(
            pb.SubmitJobRequest(spec=stack.spec(dataset, version, target, **kw)), metadata=bearer(ALICE)
        )

    # A chat template that does not render.
    broken = await _base_with_template(stack, f"broken_{unique}", "{% for m in messages %}{{ m.content }", tmp_path)
    assert "chat template does not render" in await _refusal(submit(base_model=broken))
    # A template that never ends the assistant's turn: the end-of-turn token is outside the loss mask.
    no_eot = await _base_with_template(
        stack,
        f"noeot_{unique}",
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
        "{% if m['role'] != 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
        tmp_path,
    )
    details = await _refusal(submit(base_model=no_eot))
    assert "row 1: the end-of-turn token is outside the loss mask" in details
    # A sequence length that cuts the end-of-turn token off.
    assert "row 1: the end-of-turn token is cut off by sequence_length 8" in await _refusal(submit(sequence_length=8))
    # Rows in the wrong format for the task.
    assert "task INSTRUCTION trains on prompt_response rows" in await _refusal(submit(task=pb.TASK_INSTRUCTION))
    # Unbounded values are refused before any work.
    assert "batch_size must be between" in await _refusal(submit(batch_size=10**6))


async def test_a_job_needs_select_on_the_dataset_and_execute_on_the_base_model(stack, unique) -> None:
    dataset = await stack.create_dataset(f"private_{unique}")
    version = (await stack.upload(dataset, capitals.chat_rows())).version
    request = pb.SubmitJobRequest(spec=stack.spec(dataset, version, f"bobs_{unique}"))

    assert await _code(stack.training.SubmitJob(request, metadata=bearer(BOB))) == grpc.StatusCode.PERMISSION_DENIED
    grant = rpb.GrantRequest(
        securable_type=rpb.SECURABLE_TYPE_DATASET,
        securable_full_name=dataset,
        principal="bob",
        privileges=[rpb.PRIVILEGE_SELECT],
    )
    await stack.registry.Grant(grant, metadata=bearer(ALICE))
    describe = pb.DescribeDatasetRequest(full_name=dataset)
    await _eventually(lambda: stack.training.DescribeDataset(describe, metadata=bearer(BOB)))
    # With the data but without EXECUTE on the base model, still refused.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.training.SubmitJob(request, metadata=bearer(BOB))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "tiny_llama" in info.value.details()
