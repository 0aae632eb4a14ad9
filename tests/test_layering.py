"""The pure core imports neither trio nor grpc (STYLE.md: a pure core, an IO shell)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = [
    "distributord.model",
    "distributord.distribution",
    "distributord.bounds",
    "distributord.planning",
    "distributord.topology",
    "distributord.errors",
    "distributord.config",
    "distributord.protocol",
    "distributord.units",
    # The v1 decoding is pure too; it needs protobuf (the messages), never grpc.
    "distributord.v1",
]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_neither_trio_nor_grpc(module: str) -> None:
    forbidden = {"trio", "grpc"} if module == "distributord.v1" else {"trio", "grpc", "google"}
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        f"leaked = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
        "print(','.join(leaked))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "", f"{module} imports {done.stdout.strip()}"
