"""The package's structure (``docs/architecture.md``): imports go down the layers and never in a loop, no
module imports another module's private name, no source file is over 400 lines. Read from the source with
``ast``; nothing is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "moslim_pl"
MAX_LINES = 400


# docs/architecture.md, "The layers": a module imports from its own layer and those below it
LAYERS = (
    r"moslim_pl(\.errors|\.schema|\.prefix|\.utils(\..*)?)?",
    r"moslim_pl\.data\.(types|messages|rows|synthetic|encoding|prompt_encoding|collate|pairs)",
    r"moslim_pl\.(losses|rewards)(\..*)?",
    r"moslim_pl\.models(\..*)?",
    r"moslim_pl\.(generation|rollout)",
    r"moslim_pl\.data\.(sources|schema_registry|schemas|prompt_file|samplers)",
    r"moslim_pl\.evaluation(\..*)?",
    r"moslim_pl\.(callbacks|modules|strategies)(\..*)?|moslim_pl\.data(\.(common|preference|prompts|sft))?",
    r"moslim_pl\.(cli|integrations|baselines)(\..*)?",
)


def _layer(module: str) -> int:
    return next(i for i, pattern in enumerate(LAYERS) if re.fullmatch(pattern, module))


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(tree: ast.AST, modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """``(imported module, imported name or "", line)`` for every import of the package, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("moslim_pl"):
                    found.append((_resolve(alias.name, modules), "", node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moslim_pl"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in modules:  # a submodule
                    found.append((full, "", node.lineno))
                else:
                    found.append((_resolve(node.module, modules), alias.name, node.lineno))
    return found


def _all_imports() -> list[tuple[str, Path, str | None, str, int]]:
    """``(module, its file, imported module, imported name or "", line)`` for every module of the package."""
    modules = _modules()
    return [
        (module, path, *found)
        for module, path in modules.items()
        for found in _imports(ast.parse(path.read_text()), modules)
    ]


def _graph() -> dict[str, set[str]]:
    """Module -> modules it imports, counting the packages an import runs (``a.b.c`` runs ``a.b``'s
    ``__init__``), except a module's own packages, which are already running when it is imported."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target, _, _ in _imports(ast.parse(path.read_text()), modules):
            if target is None:
                continue
            parts = target.split(".")
            deps.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycle() -> None:
    # every import counts, also those inside functions: a cycle dodged by a late import is still a cycle
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_go_down_the_layers() -> None:
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, _, target, _, _ in _all_imports()
        if target is not None and _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_module_imports_a_private_name_of_another() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} from {target}"
        for module, path, target, name, line in _all_imports()
        if name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert offenders == []


def test_no_source_file_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
