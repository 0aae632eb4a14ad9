"""The layers keep to their rooms (STYLE.md: a pure core, an IO shell).

Every module under ``distributord/core`` is imported in a fresh interpreter, which must then hold
neither trio, grpc nor protobuf (``google``), nor any module of the shell or the API adapters.
Every module under ``distributord/api`` may load protobuf, never grpc or trio. The lists are the
directories themselves: a new module is checked the day it is added.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "distributord"


def modules_in(layer: str) -> list[str]:
    """The dotted names of every module in the layer, its packages included."""
    root = PACKAGE / layer
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


CORE_FORBIDDEN = ("trio", "grpc", "google", "distributord.shell", "distributord.api")
API_FORBIDDEN = ("trio", "grpc", "distributord.shell")


def leaked(module: str, forbidden: tuple[str, ...]) -> list[str]:
    """The forbidden modules that importing ``module`` loads, in a fresh interpreter."""
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        f"forbidden = {forbidden!r}\n"
        "print(','.join(sorted(m for m in sys.modules\n"
        "    if any(m == f or m.startswith(f + '.') for f in forbidden))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return [name for name in done.stdout.strip().split(",") if name]


def test_the_layers_have_modules() -> None:
    # A walk that finds nothing would make the tests below vacuous.
    assert "distributord.core.distribution" in " ".join(modules_in("core"))
    assert "distributord.api.v1" in modules_in("api")


@pytest.mark.parametrize("module", modules_in("core"))
def test_core_module_imports_no_io(module: str) -> None:
    assert leaked(module, CORE_FORBIDDEN) == []


@pytest.mark.parametrize("module", modules_in("api"))
def test_api_module_imports_protobuf_only(module: str) -> None:
    assert leaked(module, API_FORBIDDEN) == []


def test_the_check_can_fail() -> None:
    assert leaked("distributord.shell.link", CORE_FORBIDDEN) != []
