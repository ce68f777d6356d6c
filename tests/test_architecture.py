"""The shape of the package, as the README's "How it is built" states it: checked, not hoped for.

* No import cycles, counting imports inside functions (``if TYPE_CHECKING:`` blocks are not imports).
* The modules directly under ``imgfs/``, in ``imgfs/cli/`` and in ``imgfs/fuse/`` (the assembler, the tree, the
  command line, the FUSE adapter, ...) name no format and import no container, filesystem, volume or codec
  module: only the registry does, by name.
* Only the FUSE adapter (imgfs.fuse) speaks FUSE, with no binding library. No module is over 500 lines.
* Every registry entry names an opener that exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from imgfs import registry

PACKAGE = Path(__file__).resolve().parents[1] / "imgfs"
FORMAT_PACKAGES = ("imgfs.containers", "imgfs.filesystems", "imgfs.volumes", "imgfs.codecs")
GENERIC = sorted([p for p in PACKAGE.glob("*.py") if p.name not in ("registry.py", "__init__.py", "__main__.py")]
                 + list(PACKAGE.glob("cli/*.py")) + list(PACKAGE.glob("fuse/*.py")))  # the command line and the
# FUSE adapter are generic too


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def imports(path: Path) -> set[str]:
    """Every imgfs module ``path`` imports, at any depth of the file, resolved to a module of the package."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in MODULES}


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if target.startswith(name + "."):
                continue  # a package importing its own submodule is not a cycle back to it
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_generic_modules_import_no_format(path: Path) -> None:
    specific = sorted(name for name in imports(path) if name.startswith(FORMAT_PACKAGES)
                      and name not in ("imgfs.filesystems", "imgfs.filesystems.base"))
    assert not specific, f"{path.name} imports {specific}"


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_generic_modules_name_no_format(path: Path) -> None:
    names = {fmt.name for fmt in registry.FORMATS} | {s.name for s in registry.SOURCES if s.name != "file"}
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    literals = [node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    named = sorted({name for name in names for text in literals if name in text.replace("-", " ").split()
                    or text == name})
    assert not named, f"{path.name} names the formats {named}"


def _in_adapter(name: str) -> bool:
    return name == "imgfs.fuse" or name.startswith("imgfs.fuse.")


def test_only_the_fuse_adapter_speaks_fuse() -> None:
    """imgfs.fuse speaks the kernel protocol itself: no binding library is imported anywhere, and outside the
    package only the command that mounts (imgfs.cli.mount) imports it."""
    bindings = ("mfusepy", "fusepy", "pyfuse3", "llfuse", "refuse")
    users = sorted(name for name, path in MODULES.items()
                   if any(isinstance(node, (ast.Import, ast.ImportFrom))
                          and any(b in ast.unparse(node).split() for b in bindings)
                          for node in ast.walk(ast.parse(path.read_text()))))
    assert users == []
    outside = sorted(name for name, deps in GRAPH.items() if not _in_adapter(name) and any(map(_in_adapter, deps)))
    assert outside == ["imgfs.cli.mount"]
    devices = sorted(name for name, path in MODULES.items()
                     if "/dev/fuse" in path.read_text() and not _in_adapter(name))
    assert devices == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_500_lines(name: str) -> None:
    lines = MODULES[name].read_text().count("\n")
    assert lines <= 500, f"{name} has {lines} lines"


@pytest.mark.parametrize("entry", [f.opener for f in registry.FORMATS if f.opener]
                         + [s.opener for s in registry.SOURCES] + [s.claims for s in registry.SOURCES]
                         + list(registry.SHEETS))
def test_every_registry_entry_names_a_function(entry: str) -> None:
    assert callable(registry.load(entry))


def test_namespaces_come_from_the_registry() -> None:
    assert registry.NAMESPACES[:5] == ("rockridge", "udf", "joliet", "iso1999", "iso9660")
    assert "hfsplus" in registry.NAMESPACES
