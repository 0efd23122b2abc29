"""The repository's layering, checked on the source with ``ast`` (every import statement of a
module counts, the ones inside functions too):

(a) the library (``tfrrl/``) never imports an app (``beam_pipelines``, ``tfrrl_serving``,
    ``tfrrl_cli``, ``benchmarks``);
(b) no import cycle between modules;
(c) no module imports a private (leading underscore) name defined in another package, at
    sub-package granularity: ``tfrrl.model.backbones.x`` may take ``_y`` from
    ``tfrrl.model.backbones.z`` but not from ``tfrrl.model.encoders.z``. Attribute access
    through an imported module (``from pkg import mod; mod._y``) counts as an import of ``_y``.

The checker is a few pure functions, unit-tested on small synthetic trees; the last three tests
run it on this repository. Any tree can be checked by hand::

    python -m tests.test_architecture ROOT [--library tfrrl] [--apps beam_pipelines,...]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import pathlib
import sys
import textwrap
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = "tfrrl"
APPS = ("beam_pipelines", "tfrrl_serving", "tfrrl_cli", "benchmarks")

Graph = Dict[str, Dict[str, int]]  # module → {imported module: line of the first such import}


@dataclasses.dataclass(frozen=True)
class Import:
    """One imported thing: ``import target`` (name None) or ``from target import name``; also
    ``module.name`` for a module bound by an import (``attribute`` True)."""
    importer: str
    target: str
    name: Optional[str]
    line: int
    attribute: bool = False


# --------------------------------------------------------------------------------------------
# modules and their imports
# --------------------------------------------------------------------------------------------
def find_modules(root: pathlib.Path, packages: Iterable[str]) -> Dict[str, pathlib.Path]:
    """Dotted name → file of every module under the top-level ``packages`` of ``root`` (a
    package is named by its folder and stands for its ``__init__.py``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def is_package(module: str, modules: Mapping[str, pathlib.Path]) -> bool:
    return modules[module].name == "__init__.py"


def package_of(module: str, modules: Mapping[str, pathlib.Path]) -> str:
    """The package a module belongs to: its parent, or itself for a package's ``__init__``."""
    return module if is_package(module, modules) else module.rpartition(".")[0]


def absolute_base(importer: str, importer_is_package: bool, level: int,
                  module: Optional[str]) -> str:
    """The absolute module of ``from <level dots><module> import …`` written in ``importer``."""
    if not level:
        return module or ""
    parts = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def module_imports(importer: str, source: str, importer_is_package: bool = False
                   ) -> List[Import]:
    """Every import of a module's source, at any depth, relative ones made absolute, then the
    attributes read through a name an import bound to a module (``mod.attr``)."""
    tree = ast.parse(source)
    imports: List[Import] = []
    bound: Dict[str, str] = {}  # local name → the dotted name it was imported as
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports.append(Import(importer, alias.name, None, node.lineno))
                if alias.asname:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = absolute_base(importer, importer_is_package, node.level, node.module)
            for alias in node.names:
                imports.append(Import(importer, base, alias.name, node.lineno))
                bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound):
            imports.append(Import(importer, bound[node.value.id], node.attr, node.lineno,
                                  attribute=True))
    return imports


def all_imports(modules: Mapping[str, pathlib.Path]) -> List[Import]:
    return [imp for module, path in modules.items()
            for imp in module_imports(module, path.read_text(encoding="utf-8"),
                                      is_package(module, modules))]


def imported_module(imp: Import, modules: Mapping[str, pathlib.Path]) -> Optional[str]:
    """The project module an import statement loads: ``import a.b.c`` → ``a.b.c``;
    ``from a.b import c`` → ``a.b.c`` when that is a module, else ``a.b`` (the module, or the
    package's ``__init__``, that defines ``c``); None outside the project."""
    if imp.attribute:
        return None
    if imp.name is not None and f"{imp.target}.{imp.name}" in modules:
        return f"{imp.target}.{imp.name}"
    return imp.target if imp.target in modules else None


# --------------------------------------------------------------------------------------------
# (a) library → app
# --------------------------------------------------------------------------------------------
def dotted(imp: Import) -> str:
    """What an import names: ``a.b`` for ``import a.b``, ``a.b.c`` for ``from a.b import c``."""
    return imp.target if imp.name is None else f"{imp.target}.{imp.name}"


def library_to_app_imports(imports: Iterable[Import], library: str, apps: Sequence[str]
                           ) -> List[str]:
    found = sorted((imp.importer, imp.line, dotted(imp)) for imp in imports
                   if not imp.attribute and imp.importer.split(".")[0] == library
                   and imp.target.split(".")[0] in apps)
    return [f"{importer}:{line} imports {what} (library {library} → app)"
            for importer, line, what in found]


# --------------------------------------------------------------------------------------------
# (b) cycles
# --------------------------------------------------------------------------------------------
def import_graph(imports: Iterable[Import], modules: Mapping[str, pathlib.Path]) -> Graph:
    graph: Graph = {module: {} for module in modules}
    for imp in imports:
        target = imported_module(imp, modules)
        if target is not None and target != imp.importer:
            graph[imp.importer].setdefault(target, imp.line)
    return graph


def strongly_connected_components(graph: Graph) -> List[List[str]]:
    """Tarjan's algorithm, iterative; components in a deterministic order."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return sorted(components)


def shortest_cycle(graph: Graph, members: Set[str], start: str) -> List[str]:
    """A shortest cycle through ``start`` inside ``members`` (breadth-first):
    ``[start, …, start]``."""
    parents: Dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node]):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if succ in members and succ not in parents:
                    parents[succ] = node
                    following.append(succ)
        frontier = following
    raise ValueError(f"no cycle through {start}")


def import_cycles(graph: Graph) -> List[str]:
    """One line per cycle (its modules in import order, each with the line of its import),
    enough cycles to cover every module of every strongly connected component."""
    cycles = []
    for component in strongly_connected_components(graph):
        if len(component) < 2:
            continue
        covered: Set[str] = set()
        for start in component:
            if start in covered:
                continue
            path = shortest_cycle(graph, set(component), start)
            covered.update(path)
            hops = " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:]))
            cycles.append(f"cycle: {hops} -> {start}")
    return cycles


# --------------------------------------------------------------------------------------------
# (c) private names of another package
# --------------------------------------------------------------------------------------------
def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_name_of(imp: Import, modules: Mapping[str, pathlib.Path]
                    ) -> Optional[Tuple[str, str]]:
    """(private name, package that defines it) when the import takes a private project name:
    a private module (``import a._b``, ``from a import _b``) or a private name of a module
    (``from a.b import _c``, ``b._c``)."""
    if imp.name is None:
        leaf = imp.target.rpartition(".")[2]
        if imp.target in modules and is_private(leaf):
            return leaf, package_of(imp.target, modules)
        return None
    if imp.name == "*" or not is_private(imp.name):
        return None
    if f"{imp.target}.{imp.name}" in modules and not imp.attribute:
        return imp.name, imp.target
    if imp.target in modules:
        return imp.name, package_of(imp.target, modules)
    return None


def private_imports(imports: Iterable[Import], modules: Mapping[str, pathlib.Path]
                    ) -> List[str]:
    violations = set()
    for imp in imports:
        private = private_name_of(imp, modules)
        if private and private[1] != package_of(imp.importer, modules):
            how = "reads" if imp.attribute else "imports"
            violations.add((imp.importer, imp.line,
                            f"{how} {private[0]} of {imp.target} (package {private[1]}, "
                            f"not {package_of(imp.importer, modules)})"))
    return [f"{importer}:{line} {what}" for importer, line, what in sorted(violations)]


# --------------------------------------------------------------------------------------------
def check_tree(root: pathlib.Path, library: str = LIBRARY, apps: Sequence[str] = APPS
               ) -> Dict[str, List[str]]:
    """The violations of the three rules in the packages ``library`` + ``apps`` of ``root``
    (packages that do not exist there are skipped)."""
    packages = [p for p in (library, *apps) if (root / p / "__init__.py").exists()]
    modules = find_modules(root, packages)
    imports = all_imports(modules)
    return {"library_to_app": library_to_app_imports(imports, library, apps),
            "cycles": import_cycles(import_graph(imports, modules)),
            "private": private_imports(imports, modules)}


def write_tree(root: pathlib.Path, files: Mapping[str, str]) -> pathlib.Path:
    """Writes ``{"pkg/mod.py": source}`` under root (test helper)."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root


# --------------------------------------------------------------------------------------------
# the checker on synthetic trees
# --------------------------------------------------------------------------------------------
def test_a_function_level_import_of_an_app_by_the_library_is_found(tmp_path):
    root = write_tree(tmp_path, {
        "lib/__init__.py": "",
        "lib/core.py": "def f():\n    from app.run import main\n    return main\n",
        "app/__init__.py": "",
        "app/run.py": "from lib import core\nmain = core.f\n",  # app → library: allowed
    })
    result = check_tree(root, "lib", ("app",))
    assert result["library_to_app"] == ["lib.core:2 imports app.run.main (library lib → app)"]
    assert result["private"] == []


def test_a_cycle_through_relative_and_function_level_imports_is_reported_with_its_path(
        tmp_path):
    root = write_tree(tmp_path, {
        "lib/__init__.py": "",
        "lib/a.py": "import os\n\ndef f():\n    import lib.b\n",
        "lib/b.py": "from . import c\n",
        "lib/c.py": "from .a import f\nfrom . import e\n",
        "lib/d.py": "from lib import a\n",  # into the cycle, not part of it
        "lib/e.py": "from lib.c import f\n",  # a second cycle, through lib.c
    })
    assert check_tree(root, "lib", ())["cycles"] == [
        "cycle: lib.a (line 4) -> lib.b (line 1) -> lib.c (line 1) -> lib.a",
        "cycle: lib.e (line 1) -> lib.c (line 2) -> lib.e"]


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    root = write_tree(tmp_path, {
        "lib/__init__.py": "",
        "lib/pkg/__init__.py": "from lib.pkg.impl import run\nLIMIT = 3\n",
        "lib/pkg/impl.py": "def run():\n    from lib.pkg import LIMIT\n    return LIMIT\n",
    })
    assert check_tree(root, "lib", ())["cycles"] == [
        "cycle: lib.pkg (line 1) -> lib.pkg.impl (line 2) -> lib.pkg"]


def test_private_names_of_another_sub_package_are_found(tmp_path):
    root = write_tree(tmp_path, {
        "lib/__init__.py": "",
        "lib/model/__init__.py": "",
        "lib/model/encoders/__init__.py": "",
        "lib/model/encoders/towers.py": "_WIDTH = 4\n\ndef _dense():\n    pass\n",
        "lib/model/encoders/_impl.py": "",
        "lib/model/backbones/__init__.py": "",
        "lib/model/backbones/dnn.py": (
            "from lib.model.encoders.towers import _WIDTH\n"
            "from lib.model.encoders import towers, _impl\n"
            "towers._dense()\n"
            "from ..encoders.towers import __doc__\n"),  # dunder: not private
        "lib/model/encoders/mlp.py": "from .towers import _dense\nfrom . import _impl\n",
        "app/__init__.py": "",
        "app/cli.py": "def f():\n    import lib.model.encoders._impl\n",
    })
    assert check_tree(root, "lib", ("app",))["private"] == [
        "app.cli:2 imports _impl of lib.model.encoders._impl (package lib.model.encoders, "
        "not app)",
        "lib.model.backbones.dnn:1 imports _WIDTH of lib.model.encoders.towers "
        "(package lib.model.encoders, not lib.model.backbones)",
        "lib.model.backbones.dnn:2 imports _impl of lib.model.encoders "
        "(package lib.model.encoders, not lib.model.backbones)",
        "lib.model.backbones.dnn:3 reads _dense of lib.model.encoders.towers "
        "(package lib.model.encoders, not lib.model.backbones)",
    ]


def test_a_layered_tree_passes(tmp_path):
    root = write_tree(tmp_path, {
        "lib/__init__.py": "from lib.data import schema\n",
        "lib/data/__init__.py": "",
        "lib/data/schema.py": "_PAD = 0\nFIELDS = ()\n",
        "lib/data/reader.py": "from lib.data.schema import _PAD, FIELDS\nimport numpy as np\n",
        "lib/train.py": "from lib.data import reader\nfrom lib.data.schema import FIELDS\n",
        "app/__init__.py": "",
        "app/main.py": "import lib.train\nfrom lib import data\nfrom . import other\n",
        "app/other.py": "def f():\n    from lib.data.reader import np\n",
    })
    assert check_tree(root, "lib", ("app",)) == {"library_to_app": [], "cycles": [],
                                                 "private": []}


@pytest.mark.parametrize("importer, is_pkg, statement, expected", [
    ("a.b.c", False, "import a.x.y", "a.x.y"),
    ("a.b.c", False, "from a.x import y", "a.x.y"),       # y is a module
    ("a.b.c", False, "from a.x import NAME", "a.x"),      # a name of the package's __init__
    ("a.b.c", False, "from a.x.y import NAME", "a.x.y"),
    ("a.b.c", False, "from . import d", "a.b.d"),
    ("a.b.c", False, "from ..x import NAME", "a.x"),
    ("a.b", True, "from . import d", "a.b.d"),            # in a.b's __init__
    ("a.b", True, "from .. import x", "a.x"),
    ("a.b.c", False, "import numpy", None),
])
def test_an_import_resolves_to_the_module_it_loads(importer, is_pkg, statement, expected):
    modules = {name: pathlib.Path(name.replace(".", "/") + (
        "/__init__.py" if name in ("a", "a.b", "a.x") else ".py"))
        for name in ("a", "a.b", "a.b.c", "a.b.d", "a.x", "a.x.y")}
    (imp,) = module_imports(importer, statement, is_pkg)
    assert imported_module(imp, modules) == expected


# --------------------------------------------------------------------------------------------
# this repository
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repository() -> Dict[str, List[str]]:
    return check_tree(REPO)


def test_the_library_imports_no_app(repository):
    assert not repository["library_to_app"], "\n".join(repository["library_to_app"])


def test_no_import_cycles(repository):
    assert not repository["cycles"], "\n".join(repository["cycles"])


def test_no_private_name_of_another_package_is_imported(repository):
    assert not repository["private"], "\n".join(repository["private"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=str(REPO))
    parser.add_argument("--library", default=LIBRARY)
    parser.add_argument("--apps", default=",".join(APPS))
    args = parser.parse_args(argv)
    result = check_tree(pathlib.Path(args.root), args.library, tuple(args.apps.split(",")))
    for rule, violations in result.items():
        print(f"## {rule}: {len(violations)}")
        print("\n".join(violations))
    return 1 if any(result.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
