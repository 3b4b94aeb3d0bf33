"""Which TorchScript programs the tensor worker runs, and what its confinement lets it read."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.serving.runtimes.tensor import worker_environment
from services.serving.runtimes.torchscript_policy import outward_aten_operators, refused_operators
from tests.infrastructure import ROOT

torch = pytest.importorskip("torch")
nn = torch.nn

pytestmark = pytest.mark.unit


def _refused(module: torch.nn.Module) -> list[str]:
    """Save and reload the scripted module the way the worker does, then check every function."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    unit = torch._C.CompilationUnit()
    torch._C.import_ir_module_from_buffer(unit, buffer.getvalue(), torch.device("cpu"), {}, False)
    return refused_operators(unit.get_functions(), outward_aten_operators())


@pytest.mark.parametrize(
    "module",
    [
        nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 1), nn.Sigmoid()),
        nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.Flatten()),
        nn.LSTM(4, 8, batch_first=True),
        nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2),
        nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.GELU()),
    ],
    ids=["mlp", "cnn", "lstm", "transformer", "embedding"],
)
def test_ordinary_models_use_only_allowed_operators(module: nn.Module) -> None:
    assert _refused(module.eval()) == []


def _read_file(x: torch.Tensor) -> torch.Tensor:
    return torch.from_file("/etc/hostname", size=4, dtype=torch.uint8).to(torch.float32) + x


class ReadsInForward(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_file("/etc/hostname", size=4, dtype=torch.uint8).to(torch.float32) + x


class ReadsInAHelper(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _read_file(x)


class ReadsInANestedBlock(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            for _ in range(2):
                x = _read_file(x)
        return x


class ReadsInASubmodule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Identity(), ReadsInForward())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class SavesInAnExportedMethod(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def leak(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, "/tmp/leak.pt")
        return x


@pytest.mark.parametrize(
    ("module", "refused"),
    [
        (ReadsInForward(), ["aten::from_file"]),
        (ReadsInAHelper(), ["aten::from_file"]),
        (ReadsInANestedBlock(), ["aten::from_file"]),
        (ReadsInASubmodule(), ["aten::from_file"]),
        (SavesInAnExportedMethod(), ["aten::save"]),
    ],
    ids=["forward", "helper-function", "nested-block", "submodule", "exported-method"],
)
def test_file_operators_are_refused_wherever_they_hide(module: nn.Module, refused: list[str]) -> None:
    assert _refused(module) == refused


def test_every_outward_aten_operator_outside_the_vetted_list_is_refused() -> None:
    outward = outward_aten_operators()
    assert {"aten::from_file", "aten::save", "aten::set_", "aten::to_here"} <= outward
    assert "aten::add" in outward and "aten::matmul" not in outward  # str + str is vetted; matmul has no str


def _confined_read(model_folder: Path, target: Path) -> str:
    """Confine a fresh interpreter as the worker does, then try to read `target`."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from services.serving.runtimes.confinement import confine
        how = confine(Path({str(model_folder)!r}), 0)
        try:
            data = open({str(target)!r}).read()
            print(how, "|read", data)
        except PermissionError:
            print(how, "|denied")
        """
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], env=worker_environment(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_confined_worker_reads_its_model_folder_and_nothing_beside_it(tmp_path: Path) -> None:
    model, other = tmp_path / "model", tmp_path / "other-team"
    model.mkdir()
    other.mkdir()
    (model / "weights.txt").write_text("mine")
    (other / "secret.txt").write_text("theirs")

    inside = _confined_read(model, model / "weights.txt")
    if not inside.startswith("landlock"):
        pytest.skip(f"this kernel does not confine: {inside}")
    assert inside.endswith("|read mine")
    assert _confined_read(model, other / "secret.txt").endswith("|denied")
