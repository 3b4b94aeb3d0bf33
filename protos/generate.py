"""Generate the Python stubs for every .proto under protos/ with grpcio-tools.

    python protos/generate.py           write stubs into protos/gen/python
    python protos/generate.py --check   exit 1 if the committed stubs differ from the protos

The stubs are committed so that services import them without a build step;
`--check` (and the unit test that runs it) keeps them honest.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
OUTPUT = PROTO_ROOT / "gen" / "python"


def proto_files() -> list[Path]:
    return sorted(p for p in PROTO_ROOT.rglob("*.proto") if "gen" not in p.relative_to(PROTO_ROOT).parts)


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Regular packages (not namespace packages) so setuptools and tools find them.
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        if folder != out:
            (folder / "__init__.py").touch()


def differences(expected: Path, actual: Path) -> list[str]:
    found = []
    expected_files = {
        p.relative_to(expected) for p in expected.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    actual_files = {p.relative_to(actual) for p in actual.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    for rel in sorted(expected_files - actual_files):
        found.append(f"missing: {rel}")
    for rel in sorted(actual_files - expected_files):
        found.append(f"stale: {rel}")
    for rel in sorted(expected_files & actual_files):
        if not filecmp.cmp(expected / rel, actual / rel, shallow=False):
            found.append(f"differs: {rel}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            problems = differences(Path(tmp), OUTPUT)
        for line in problems:
            print(f"protos/gen/python: {line}", file=sys.stderr)
        if problems:
            print("generated stubs are out of date: run `make protos`", file=sys.stderr)
            return 1
        print(f"generated stubs match {len(proto_files())} protos")
        return 0
    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    generate(OUTPUT)
    print(f"generated stubs for {len(proto_files())} protos into {OUTPUT.relative_to(PROTO_ROOT.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
