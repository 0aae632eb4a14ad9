"""The layers keep to their rooms (STYLE.md: a pure core, an IO shell); no import goes in circles.

Two checks, each with a control case that shows it can fail:

* **Fresh interpreters.** Every module under ``distributord/core`` is imported in a fresh
  interpreter, which must then hold neither trio, grpc nor protobuf (``google``), nor any module
  of the shell or the API adapters. Every module under ``distributord/api`` may load protobuf,
  never grpc or trio. This sees what an import really loads, third-party packages included, but
  only at import time.
* **The import graph, read from the source.** Every import statement of every module under
  ``distributord/`` is read with :mod:`ast`: at the top, inside functions, under ``if
  TYPE_CHECKING:``, in ``try`` blocks: wherever it is. ``from package import name`` is an import
  of the module ``package.name`` when there is one, else of ``package``; relative imports are
  resolved. An import counts as an edge to the module it names (not to the packages above it,
  whose ``__init__`` importing their own modules is no cycle of design).

  - **No cycle anywhere** (:func:`cycles`, Tarjan's strongly connected components). Imports
    under ``if TYPE_CHECKING:`` count: they do not run, but they are a dependency all the same
    (a reader and mypy follow them), and a cycle through one is still two modules that cannot
    be understood, tested or moved apart (issue 19's ``control → metrics → requestloop → … →
    control`` went through one).
  - **core/ and api/ reach neither trio nor grpc, at any depth or laziness**
    (:func:`reached`): every module they import, directly or through other modules of
    distributord, at any level and under any condition, is checked, and so is every
    third-party module any of them names (imported in a fresh interpreter, it must not load a
    forbidden package either). A generated ``*_pb2_grpc`` module is grpc. An import the walk
    cannot read (``importlib.import_module`` of a computed name, ``__import__``) is refused in
    these layers.

The lists are the directories themselves: a new module is checked the day it is added.
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from typing import NamedTuple

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


CLIENT_FORBIDDEN = (
    "trio",
    "trio_util",
    "grpc",
    "google",
    "prometheus_client",
    "distributord.shell",
    "distributord.api",
    "distributord.sim",
    "distributord.cli",
)
"""What the client library (all but its trio face) must not load: the daemon's dependencies
(a client-only install has none of them) and the daemon's IO layers."""


@pytest.mark.parametrize(
    "module", [m for m in modules_in("client") if m != "distributord.client.trio"]
)
def test_client_module_loads_none_of_the_daemons_dependencies(module: str) -> None:
    assert leaked(module, CLIENT_FORBIDDEN) == []


def test_the_check_can_fail() -> None:
    assert leaked("distributord.shell.link", CORE_FORBIDDEN) != []


# --- the import graph, read from the source --------------------------------------------------


DYNAMIC = "<dynamic>"
"""The target of an import whose module the walk cannot read (a computed name)."""


class Import(NamedTuple):
    """One import in a module: the module it names, and where."""

    target: str
    """The module imported (dotted), or :data:`DYNAMIC`."""
    line: int
    internal: bool
    """Whether ``target`` is a module of the package walked."""


Graph = Mapping[str, list[Import]]
"""Each module of the package (dotted name) to every import it makes."""


def modules_under(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Every module of the package at ``root`` (a directory), by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _dynamic_import(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def imports_of(name: str, path: pathlib.Path, known: Iterable[str]) -> list[Import]:
    """Every import in the module ``name`` (at ``path``), wherever in the module it is."""
    modules = set(known)
    found: list[Import] = []

    def add(target: str, line: int) -> None:
        found.append(Import(target, line, target in modules))

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules or (base not in modules and alias.name != "*"):
                    # A module of ours by that name; or, outside the package, the name may be a
                    # module (``from grpc import aio``): count both.
                    add(submodule, node.lineno)
                if submodule not in modules:
                    add(base, node.lineno)
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            argument = node.args[0] if node.args else None
            literal = isinstance(argument, ast.Constant) and isinstance(argument.value, str)
            add(argument.value if literal else DYNAMIC, node.lineno)  # type: ignore[union-attr]
    return list(dict.fromkeys(found))  # ``from m import a, b``: one import of m


def import_graph(root: pathlib.Path) -> dict[str, list[Import]]:
    """The package at ``root``: each module and its imports."""
    modules = modules_under(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: Graph) -> list[list[str]]:
    """One import cycle per strongly connected component that has one, as a path ``a, b, …, a``.

    Tarjan's algorithm over the imports between the graph's own modules, then, within each
    component, a shortest way back from its first module to itself.
    """
    edges = {
        module: sorted({i.target for i in found if i.internal and i.target in graph})
        for module, found in graph.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges[module]:
            if target not in index:
                connect(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in edges[module]:
                components.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            connect(module)
    return [_loop(component, edges) for component in sorted(components)]


def _loop(component: list[str], edges: Mapping[str, list[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth first)."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in edges[module]:
                if target == start:
                    path = [module]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target in members and target not in came_from:
                    came_from[target] = module
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in the component {component}")  # pragma: no cover


def assert_acyclic(graph: Graph) -> None:
    """Fail, naming each cycle, if the graph has one."""
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" → ".join(cycle) for cycle in found)


def _matches(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def forbidden(target: str, rules: Iterable[str]) -> bool:
    """Whether an imported module falls under one of ``rules`` (packages and their modules).

    A generated ``*_pb2_grpc`` module imports grpc, so it counts as grpc.
    """
    rules = tuple(rules)
    if "grpc" in rules and target.rpartition(".")[2].endswith("_pb2_grpc"):
        return True
    return any(_matches(target, rule) for rule in rules)


def reached(graph: Graph, start: str, rules: Iterable[str]) -> list[str]:
    """Every forbidden import ``start`` reaches, with the chain of modules that leads to it.

    Follows the imports between the graph's modules at any depth; ``rules`` apply to the
    graph's own modules (``distributord.shell``) and to third-party ones (``trio``) alike. An
    import the walk cannot read (:data:`DYNAMIC`) is always reported.
    """
    rules = tuple(rules)
    found: list[str] = []
    chains = {start: [start]}
    pending = [start]
    while pending:
        module = pending.pop()
        for imported in graph[module]:
            chain = " → ".join(chains[module])
            if imported.target == DYNAMIC or forbidden(imported.target, rules):
                found.append(f"{chain}: imports {imported.target} (line {imported.line})")
            elif imported.internal and imported.target not in chains:
                chains[imported.target] = [*chains[module], imported.target]
                pending.append(imported.target)
    return sorted(found)


def external_reach(graph: Graph, starts: Iterable[str]) -> set[str]:
    """The third-party (and standard) modules named by everything ``starts`` reach."""
    seen: set[str] = set()
    pending = list(starts)
    names: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        for imported in graph[module]:
            if imported.internal:
                pending.append(imported.target)
            elif imported.target != DYNAMIC:
                names.add(imported.target)
    return names


def loaded_by(
    modules: Iterable[str], rules: tuple[str, ...], *, path: Iterable[pathlib.Path] = ()
) -> dict[str, list[str]]:
    """Third-party modules that load a forbidden package when imported (fresh interpreter).

    A name that is not a module (``from package import name``) is skipped. ``path`` goes in
    front of ``sys.path``.
    """
    code = textwrap.dedent(
        f"""
        import importlib, sys
        sys.path[:0] = {[str(p) for p in path]!r}
        rules = {rules!r}
        def bad():
            return {{m for m in sys.modules if any(m == r or m.startswith(r + ".") for r in rules)}}
        before = bad()
        for name in {sorted(modules)!r}:
            try:
                importlib.import_module(name)
            except ImportError:
                continue
            now = bad()
            if now - before:
                print(name + ":" + ",".join(sorted(now - before)))
            before = now
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    culprits = {}
    for line in done.stdout.splitlines():
        name, _, loaded = line.partition(":")
        culprits[name] = loaded.split(",")
    return culprits


GRAPH = import_graph(PACKAGE)

LAYER_RULES = {
    "core": (
        "trio",
        "grpc",
        "google",
        "frequenz",
        "distributord.shell",
        "distributord.api",
        "distributord.sim",
        "distributord.cli",
    ),
    "api": ("trio", "grpc", "distributord.shell", "distributord.sim", "distributord.cli"),
}
"""What each pure layer must not reach: core is pure (no IO, no protobuf or generated code, no
layer above it); api may use protobuf and the generated messages, never grpc or trio."""


def test_the_walk_reads_the_package() -> None:
    # Vacuity guards: the graph holds every module, and sees the kinds of import it claims to.
    assert set(GRAPH) == set(modules_under(PACKAGE))
    link = {i.target for i in GRAPH["distributord.shell.link"]}
    assert {"trio", "grpc", "distributord.api.adapter"} <= link
    server = {i.target for i in GRAPH["distributord.sim.server"]}
    assert "distributord.api.v1" in server  # imported inside a function
    relative = {i.target for i in GRAPH["distributord.core.distribution"]}
    assert "distributord.core.distribution.placement" in relative


def test_no_import_cycle_in_the_package() -> None:
    assert_acyclic(GRAPH)


@pytest.mark.parametrize("layer", sorted(LAYER_RULES))
def test_a_pure_layer_reaches_no_io_at_any_depth(layer: str) -> None:
    rules = LAYER_RULES[layer]
    assert [f for m in modules_in(layer) for f in reached(GRAPH, m, rules)] == []


@pytest.mark.parametrize("layer", sorted(LAYER_RULES))
def test_what_a_pure_layer_imports_from_outside_loads_no_io(layer: str) -> None:
    names = external_reach(GRAPH, modules_in(layer))
    assert "attrs" in names  # the walk saw the layer's third-party imports
    rules = tuple(r for r in LAYER_RULES[layer] if not r.startswith("distributord"))
    assert loaded_by(names, rules) == {}


# --- the checks can fail ---------------------------------------------------------------------


def package(tmp_path: pathlib.Path, files: Mapping[str, str]) -> pathlib.Path:
    """A package ``pkg`` of the given modules (relative paths to source) under ``tmp_path``."""
    root = tmp_path / "pkg"
    for relative, source in {"__init__.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


def test_a_cycle_is_found_and_named(tmp_path: pathlib.Path) -> None:
    root = package(
        tmp_path,
        {
            "a.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg.b import B
            """,
            "b.py": """
                def later():
                    from . import c
            """,
            "c.py": "import pkg.a\n",
            "d.py": "from pkg import a, b\n",  # imports the cycle, is not in it
            "sub/__init__.py": "from .e import E\n",
            "sub/e.py": "from .. import d\nE = 1\n",  # relative, two levels
        },
    )
    graph = import_graph(root)
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    with pytest.raises(
        AssertionError, match=re.escape("import cycles: pkg.a → pkg.b → pkg.c → pkg.a\n")
    ):
        assert_acyclic(graph)


def test_a_tree_has_no_cycle(tmp_path: pathlib.Path) -> None:
    root = package(
        tmp_path,
        {
            "a.py": "from pkg import b\nfrom pkg.sub import e\n",
            "b.py": "import os\n",
            "sub/__init__.py": "from . import e\n",  # a package importing its own module
            "sub/e.py": "from pkg import b\n",
        },
    )
    graph = import_graph(root)
    assert {i.target for i in graph["pkg.a"] if i.internal} == {"pkg.b", "pkg.sub.e"}
    assert_acyclic(graph)


def test_a_module_importing_itself_is_a_cycle(tmp_path: pathlib.Path) -> None:
    root = package(tmp_path, {"a.py": "def f():\n    import pkg.a\n"})
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.a"]]


def test_a_forbidden_import_is_found_at_any_depth_or_laziness(tmp_path: pathlib.Path) -> None:
    root = package(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/pure.py": "import math\n",
            "core/lazy.py": """
                def serve():
                    import grpc
            """,
            "core/deep.py": "from pkg.core import middle\n",
            "core/middle.py": "from ..helpers import glue\n",
            "helpers/__init__.py": "",
            "helpers/glue.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    import trio
            """,
            "core/generated.py": """
                def stub():
                    from frequenz.api.microgrid.v1 import microgrid_pb2_grpc
            """,
            "core/dynamic.py": """
                import importlib
                def load(name):
                    return importlib.import_module(name)
            """,
            "core/named.py": "import importlib\nimportlib.import_module('trio.lowlevel')\n",
        },
    )
    graph = import_graph(root)
    rules = ("trio", "grpc")
    assert reached(graph, "pkg.core.pure", rules) == []
    assert reached(graph, "pkg.core.lazy", rules) == ["pkg.core.lazy: imports grpc (line 3)"]
    assert reached(graph, "pkg.core.deep", rules) == [
        "pkg.core.deep → pkg.core.middle → pkg.helpers.glue: imports trio (line 4)"
    ]
    assert reached(graph, "pkg.core.generated", rules) == [
        "pkg.core.generated: imports frequenz.api.microgrid.v1.microgrid_pb2_grpc (line 3)"
    ]
    assert reached(graph, "pkg.core.dynamic", rules) == [
        f"pkg.core.dynamic: imports {DYNAMIC} (line 4)"
    ]
    assert reached(graph, "pkg.core.named", rules) == [
        "pkg.core.named: imports trio.lowlevel (line 2)"
    ]


def test_a_third_party_module_that_loads_grpc_is_found(tmp_path: pathlib.Path) -> None:
    # Not grpc by name, but importing it loads grpc: only importing it can tell.
    (tmp_path / "sneaky.py").write_text("import grpc\n")
    culprits = loaded_by({"math", "sneaky", "no_such_module"}, ("grpc",), path=[tmp_path])
    assert list(culprits) == ["sneaky"]
    assert "grpc" in culprits["sneaky"]
