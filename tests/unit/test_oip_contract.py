"""protos/inference must stay wire-identical to the Open Inference Protocol that tritonclient speaks.

The stock `tritonclient[grpc]` client ships its own compiled copy of Triton's
grpc_service.proto and model_config.proto. These tests compile our protos into a
temporary folder and compare every service, method, message, field and enum with
the descriptors tritonclient ships, then round-trip real messages between the two.

Both sets of descriptors declare the same symbols (`inference.ModelInferRequest`, ...),
and protobuf refuses to register a symbol twice in its default pool. So each side is
loaded in a child interpreter, which hands back serialized FileDescriptorProtos, and
the comparison runs on private descriptor pools: this test neither imports
tritonclient nor our stubs into the pytest process, where other tests may import
either.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
SERVICE = "inference.GRPCInferenceService"

# Prints {"files": {name: base64 FileDescriptorProto}, "servicer": [...], "stub": [...], "source": path}
# for the modules named on the command line (pb2 modules, then the *_pb2_grpc module or "-").
_DUMP = textwrap.dedent(
    """
    import base64, json, sys, importlib
    gen = sys.argv[1]
    if gen != "-":
        sys.path.insert(0, gen)
    pb2 = [importlib.import_module(m) for m in sys.argv[2].split(",")]
    files = {}
    for module in pb2:
        files[module.DESCRIPTOR.name] = base64.b64encode(module.DESCRIPTOR.serialized_pb).decode()
    out = {"files": files, "source": pb2[0].__file__, "servicer": [], "stub": []}
    if sys.argv[3] != "-":
        import grpc
        grpc_module = importlib.import_module(sys.argv[3])
        servicer = grpc_module.GRPCInferenceServiceServicer
        out["servicer"] = sorted(n for n in vars(servicer) if not n.startswith("_"))
        stub = grpc_module.GRPCInferenceServiceStub(grpc.insecure_channel("localhost:1"))
        out["stub"] = sorted(n for n in vars(stub) if not n.startswith("_"))
    print(json.dumps(out))
    """
)


def _dump(gen: str, modules: list[str], grpc_module: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _DUMP, gen, ",".join(modules), grpc_module],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pool(
    files: dict[str, str],
) -> tuple[descriptor_pool.DescriptorPool, dict[str, descriptor_pb2.FileDescriptorProto]]:
    protos = {}
    for name, data in files.items():
        proto = descriptor_pb2.FileDescriptorProto()
        proto.ParseFromString(base64.b64decode(data))
        protos[name] = proto
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        for dep in protos[name].dependency:
            add(dep)
        pool.Add(protos[name])
        added.add(name)

    for name in protos:
        add(name)
    return pool, protos


@pytest.fixture(scope="module")
def triton() -> dict:
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed: pip install 'tritonclient[grpc]' to check the OIP contract")
    try:
        dumped = _dump(
            "-",
            ["tritonclient.grpc.model_config_pb2", "tritonclient.grpc.service_pb2"],
            "tritonclient.grpc.service_pb2_grpc",
        )
    except RuntimeError as error:
        pytest.skip(f"tritonclient.grpc is not importable: {str(error).strip().splitlines()[-1]}")
    pool, protos = _pool(dumped["files"])
    return {"pool": pool, "protos": protos, **dumped}


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> dict:
    gen = tmp_path_factory.mktemp("oip_stubs")
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "inference").glob("*.proto"))
    assert sources == ["inference/grpc_service.proto", "inference/model_config.proto"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={gen}",
            f"--grpc_python_out={gen}",
            *sources,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # A regular package, so that no installed `inference` package shadows the fresh stubs.
    (gen / "inference" / "__init__.py").touch()
    dumped = _dump(
        str(gen),
        ["inference.model_config_pb2", "inference.grpc_service_pb2"],
        "inference.grpc_service_pb2_grpc",
    )
    assert Path(dumped["source"]).resolve().is_relative_to(gen.resolve()), dumped["source"]
    pool, protos = _pool(dumped["files"])
    return {"pool": pool, "protos": protos, **dumped}


# --- structural comparison -------------------------------------------------------------------


def _label(field) -> str:
    if hasattr(field, "label"):  # protobuf < 7
        return {1: "optional", 2: "required", 3: "repeated"}[field.label]
    return "repeated" if field.is_repeated else "required" if field.is_required else "optional"


def _field_shape(field) -> tuple:
    return (
        field.name,
        field.number,
        field.type,
        _label(field),
        field.message_type.full_name if field.message_type else None,
        field.enum_type.full_name if field.enum_type else None,
        field.containing_oneof.name if field.containing_oneof else None,
        field.has_presence,
    )


def _messages(pool, protos) -> dict:
    """Every message (nested ones and map entries included) by full name, with its shape."""
    found = {}

    def visit(desc) -> None:
        found[desc.full_name] = {
            "fields": sorted(_field_shape(f) for f in desc.fields),
            "oneofs": sorted((o.name, sorted(f.name for f in o.fields)) for o in desc.oneofs),
            "map_entry": desc.GetOptions().map_entry,
            "nested": sorted(n.full_name for n in desc.nested_types),
            "enums": sorted(e.full_name for e in desc.enum_types),
        }
        for nested in desc.nested_types:
            visit(nested)

    for name in protos:
        for desc in pool.FindFileByName(name).message_types_by_name.values():
            visit(desc)
    return found


def _enums(pool, protos) -> dict:
    found = {}

    def visit_message(desc) -> None:
        for enum in desc.enum_types:
            found[enum.full_name] = sorted((v.name, v.number) for v in enum.values)
        for nested in desc.nested_types:
            visit_message(nested)

    for name in protos:
        file = pool.FindFileByName(name)
        for enum in file.enum_types_by_name.values():
            found[enum.full_name] = sorted((v.name, v.number) for v in enum.values)
        for desc in file.message_types_by_name.values():
            visit_message(desc)
    return found


def _methods(pool) -> dict:
    service = pool.FindServiceByName(SERVICE)
    return {
        m.name: (m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming)
        for m in service.methods
    }


def _diff(expected: dict, actual: dict) -> list[str]:
    problems = [f"missing: {k}" for k in sorted(expected.keys() - actual.keys())]
    problems += [f"extra: {k}" for k in sorted(actual.keys() - expected.keys())]
    problems += [
        f"differs: {k}\n  triton: {expected[k]}\n  ours:   {actual[k]}"
        for k in sorted(expected.keys() & actual.keys())
        if expected[k] != actual[k]
    ]
    return problems


def test_files_are_proto3_in_package_inference_without_foreign_options(ours):
    protos = ours["protos"]
    assert set(protos) == {"inference/grpc_service.proto", "inference/model_config.proto"}
    for proto in protos.values():
        assert proto.package == "inference"
        assert proto.syntax == "proto3"
        assert not proto.options.HasField("go_package")
        assert not proto.options.HasField("java_package")
    assert list(protos["inference/grpc_service.proto"].dependency) == ["inference/model_config.proto"]
    assert list(protos["inference/model_config.proto"].dependency) == []


def test_service_has_every_triton_rpc_with_the_same_types_and_streaming(triton, ours):
    expected, actual = _methods(triton["pool"]), _methods(ours["pool"])
    assert not _diff(expected, actual), "\n".join(_diff(expected, actual))
    assert [m.name for m in ours["pool"].FindServiceByName(SERVICE).methods] == list(expected)
    assert actual["ModelStreamInfer"] == (
        "inference.ModelInferRequest",
        "inference.ModelStreamInferResponse",
        True,
        True,
    )


def test_every_message_has_the_same_fields_numbers_types_and_labels(triton, ours):
    expected = _messages(triton["pool"], triton["protos"])
    actual = _messages(ours["pool"], ours["protos"])
    problems = _diff(expected, actual)
    assert not problems, "\n".join(problems)
    # The parts tritonclient relies on most, spelled out.
    params = {f[0]: f[1:3] for f in actual["inference.InferParameter"]["fields"]}
    assert params == {
        "bool_param": (1, 8),  # TYPE_BOOL
        "int64_param": (2, 3),  # TYPE_INT64
        "string_param": (3, 9),  # TYPE_STRING
        "double_param": (4, 1),  # TYPE_DOUBLE
        "uint64_param": (5, 4),  # TYPE_UINT64
    }
    assert "inference.ModelStreamInferResponse" in actual


def test_every_enum_has_the_same_values(triton, ours):
    expected = _enums(triton["pool"], triton["protos"])
    actual = _enums(ours["pool"], ours["protos"])
    problems = _diff(expected, actual)
    assert not problems, "\n".join(problems)


def test_each_file_declares_the_same_top_level_symbols_as_tritons(triton, ours):
    def symbols(protos, name):
        proto = protos[name]
        return sorted([m.name for m in proto.message_type] + [e.name for e in proto.enum_type])

    for theirs, mine in [
        ("grpc_service.proto", "inference/grpc_service.proto"),
        ("model_config.proto", "inference/model_config.proto"),
    ]:
        assert symbols(ours["protos"], mine) == symbols(triton["protos"], theirs), mine


def test_generated_grpc_stubs_expose_every_rpc(triton, ours):
    assert ours["servicer"] == triton["servicer"]
    assert ours["stub"] == triton["stub"]
    assert set(ours["stub"]) == set(_methods(ours["pool"]))


# --- bytes on the wire -----------------------------------------------------------------------


def _cls(side: dict, name: str):
    return message_factory.GetMessageClass(side["pool"].FindMessageTypeByName(name))


def _round_trip(triton, ours, name: str, sent):
    """Triton bytes -> our message -> our bytes -> Triton message, with nothing lost on the way.

    Unknown fields are dropped before re-encoding, so a field our schema lacks, or
    declares with another number or type, cannot survive the trip unnoticed.
    """
    mine = _cls(ours, name).FromString(sent.SerializeToString(deterministic=True))
    mine.DiscardUnknownFields()
    back = _cls(triton, name).FromString(mine.SerializeToString(deterministic=True))
    assert back == sent
    return mine


def test_infer_request_round_trips_between_tritonclient_and_our_stubs(triton, ours):
    request = _cls(triton, "inference.ModelInferRequest")(model_name="chat", model_version="3", id="req-1")
    request.parameters["stream"].bool_param = True
    request.parameters["max_tokens"].int64_param = 64
    request.parameters["stop"].string_param = "</s>"
    request.parameters["temperature"].double_param = 0.25
    request.parameters["seed"].uint64_param = 2**63 + 5
    tensor = request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    tensor.parameters["binary_data"].bool_param = False
    request.outputs.add(name="text_output")
    word = "héllo".encode()
    request.raw_input_contents.append(len(word).to_bytes(4, "little") + word)

    mine = _round_trip(triton, ours, "inference.ModelInferRequest", request)
    assert mine.parameters["temperature"].WhichOneof("parameter_choice") == "double_param"
    assert mine.parameters["seed"].uint64_param == 2**63 + 5
    assert mine.inputs[0].name == "text_input" and list(mine.inputs[0].shape) == [1]
    assert mine.raw_input_contents[0][4:].decode() == "héllo"


def test_stream_response_and_model_config_round_trip(triton, ours):
    response = _cls(triton, "inference.ModelStreamInferResponse")()
    response.infer_response.model_name = "chat"
    response.infer_response.id = "req-1"
    response.infer_response.parameters["triton_final_response"].bool_param = True
    out = response.infer_response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    out.contents.bytes_contents.append(b"token")
    mine = _round_trip(triton, ours, "inference.ModelStreamInferResponse", response)
    assert mine.infer_response.outputs[0].contents.bytes_contents == [b"token"]

    error = _cls(triton, "inference.ModelStreamInferResponse")(error_message="model not ready")
    assert _round_trip(triton, ours, "inference.ModelStreamInferResponse", error).error_message == "model not ready"

    config = _cls(triton, "inference.ModelConfigResponse")()
    config.config.name = "chat"
    config.config.backend = "vllm"
    config.config.max_batch_size = 0
    config.config.model_transaction_policy.decoupled = True
    config.config.input.add(name="text_input", data_type=13, dims=[1])  # TYPE_STRING
    config.config.parameters["engine"].string_value = "vllm"
    mine = _round_trip(triton, ours, "inference.ModelConfigResponse", config)
    assert mine.config.model_transaction_policy.decoupled is True
