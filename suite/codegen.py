"""Regenerate everything derived from `protos/`: `chutes-suite codegen`.

- Python messages and stubs (`*_pb2.py`, `*_pb2_grpc.py`) with mypy-protobuf `.pyi` stubs, into the
  `chutes` package (`chutes/<domain>/v1/`), next to the SDK;
- the descriptor set Envoy's transcoder loads (`gateway/chutes.binpb`).

The output is committed; a test regenerates into a temporary folder and fails on any difference.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = ROOT / "third_party"
DESCRIPTOR = Path("gateway") / "chutes.binpb"
#: Vendored protos we generate Python code for too (relative to third_party/).
VENDORED_PROTOS: list[str] = []


def proto_files() -> list[Path]:
    """Every proto of the contract, relative to `protos/`."""
    return sorted(p.relative_to(PROTOS) for p in PROTOS.rglob("*.proto"))


def _plugin(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install the test extra (pip install -e '.[test]')")
    return found


def generate(out: Path) -> None:
    """Write stubs under `out/chutes/...` and the descriptor set at `out/gateway/chutes.binpb`."""
    import grpc_tools
    from grpc_tools import protoc

    wkt = Path(grpc_tools.__file__).parent / "_proto"
    (out / DESCRIPTOR).parent.mkdir(parents=True, exist_ok=True)
    # google/rpc/error_details.proto rides along so the transcoder can render ErrorInfo and
    # BadRequest details of failed calls (its Python module is not copied: googleapis ships it).
    files = [str(p) for p in proto_files()] + VENDORED_PROTOS + ["google/rpc/error_details.proto"]
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{THIRD_PARTY}",
        f"-I{wkt}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--descriptor_set_out={out / DESCRIPTOR}",
        "--include_imports",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Every folder of generated modules is a package, down from `chutes/`.
    for proto in [*proto_files(), *map(Path, VENDORED_PROTOS)]:
        package = out / proto.parent
        while package != out:
            (package / "__init__.py").touch()
            package = package.parent


def generated_files(root: Path) -> dict[str, bytes]:
    """The generated files under `root` (stubs and descriptor), keyed by relative path."""
    found = {str(p.relative_to(root)): p.read_bytes() for p in (root / "chutes").rglob("*_pb2*.py*")}
    descriptor = root / DESCRIPTOR
    if descriptor.exists():
        found[str(DESCRIPTOR)] = descriptor.read_bytes()
    return found


def main() -> None:
    """Regenerate in place: stale generated files are removed, new ones written."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp))
        for stale in set(generated_files(ROOT)) - set(fresh):
            (ROOT / stale).unlink()
        for rel, data in fresh.items():
            target = ROOT / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for init in Path(tmp).rglob("__init__.py"):
            (ROOT / init.relative_to(tmp)).touch()
    print(f"generated {len(fresh)} files from {len(proto_files())} protos")
