"""The package's shape: no import cycles in bert_jax/, modules under 300 lines.

A module may run to 400 lines when it is one concept that reads better whole; its
docstring then says so in a line holding "over 300 lines" (never split a concept only
to fit a number, STYLE.md).

`python tests/test_import_graph.py [REPO]` prints the package's shape: files and lines per
folder, the largest modules and the import cycles (of this checkout, or of another).

The graph is read from the source with `ast`, so it also sees imports inside functions
(the lazy ones that hide a cycle from Python's import machinery at load time).
"""

from __future__ import annotations

import ast
import pathlib

PACKAGE = "bert_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 300
HARD_MAX_LINES = 400


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported_modules(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package holding this module
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # `from bert_jax.x import y`: an edge to bert_jax.x.y when y is a
                # submodule, else to bert_jax.x (the package's own __init__ is not
                # counted for a submodule: Python imports a submodule of a package that
                # is still initialising without a problem).
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in known else source)
    edges = set()
    for target in found:
        while target and target not in known:  # `import bert_jax.x.f` names no module
            target = target.rpartition(".")[0]
        if target and target != name and target.startswith(PACKAGE):
            edges.add(target)
    return edges


def import_graph() -> dict[str, set[str]]:
    paths = modules()
    known = set(paths)
    return {name: imported_modules(name, path, known) for name, path in paths.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module.

    A component holds every module on some cycle with the others; the cycle shown
    is the shortest one through its first module, so fixing it may leave others.
    """
    return [_cycle_through(graph, component) for component in components_of(graph)]


def components_of(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A concrete path a -> b -> ... -> a inside one strongly connected component."""
    start = min(component)
    parents, frontier = {start: None}, [start]
    while frontier:  # breadth first: the shortest cycle back to start
        nxt = []
        for node in frontier:
            for succ in sorted(graph[node] & component):
                if succ == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if succ not in parents:
                    parents[succ] = node
                    nxt.append(succ)
        frontier = nxt
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_cycle_finder_sees_lazy_relative_and_submodule_imports(tmp_path):
    # The finder itself: a cycle made of a function-level import, a relative import
    # and a `from package import submodule` must be reported; a chain must not.
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert find_cycles(graph) == [["p.a", "p.b", "p.c", "p.a"]]
    assert find_cycles({"p.a": {"p.b"}, "p.b": set()}) == []
    known = {"bert_jax", "bert_jax.x", "bert_jax.x.y", "bert_jax.x.z"}
    source = tmp_path / "z.py"
    source.write_text("from . import y\ndef f():\n    from bert_jax.x import helper\n")
    assert imported_modules("bert_jax.x.z", source, known) == {"bert_jax.x.y", "bert_jax.x"}


def test_bert_jax_has_no_import_cycles():
    graph = import_graph()
    lines = [
        f"{sorted(component)}, e.g. " + " -> ".join(_cycle_through(graph, component))
        for component in components_of(graph)
    ]
    assert not lines, "modules importing each other in bert_jax/:\n" + "\n".join(lines)


def says_why_it_is_long(source: str) -> bool:
    docstring = ast.get_docstring(ast.parse(source)) or ""
    return "over 300 lines" in " ".join(docstring.split()).lower()


def test_every_module_is_under_300_lines_or_says_why_under_400():
    too_long = {}
    for path in sorted(ROOT.rglob("*.py")):
        source = path.read_text()
        length = len(source.splitlines())
        if length >= HARD_MAX_LINES or (length >= MAX_LINES and not says_why_it_is_long(source)):
            too_long[str(path.relative_to(ROOT.parent))] = length
    assert not too_long, (
        f"modules of {MAX_LINES}+ lines without 'over 300 lines' and a reason in their "
        f"docstring, or of {HARD_MAX_LINES}+ lines (split them): {too_long}"
    )


def test_the_long_module_rule_reads_the_docstring():
    assert says_why_it_is_long('"""A tally.\n\n(Over 300\nlines: one concept.)"""\n')
    assert not says_why_it_is_long('"""A tally."""\n# over 300 lines\n')


def layout_figures(root: pathlib.Path = ROOT) -> str:
    """Files and lines per folder of ``root``, its largest modules, and its import cycles."""
    global ROOT
    saved, ROOT = ROOT, root
    try:
        paths = modules()
        graph = {name: imported_modules(name, path, set(paths)) for name, path in paths.items()}
        cycles = components_of(graph)
    finally:
        ROOT = saved
    sizes = {
        path.relative_to(root.parent): len(path.read_text().splitlines()) for path in paths.values()
    }
    folders: dict[str, list[int]] = {}
    for rel, length in sizes.items():
        folder = str(rel.parent) + ("/ (top level)" if rel.parent == pathlib.Path(PACKAGE) else "/")
        folders.setdefault(folder, []).append(length)
    lines = ["| folder | files | lines |", "|---|---|---|"]
    lines += [f"| {name} | {len(v)} | {sum(v):,} |" for name, v in sorted(folders.items())]
    lines.append(f"| **{PACKAGE}/ total** | {len(sizes)} | {sum(sizes.values()):,} |")
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:8]
    lines.append("largest: " + ", ".join(f"{rel} {n}" for rel, n in largest))
    lines.append(
        f"over 300 lines: {sum(n > 300 for n in sizes.values())}; import cycles: {len(cycles)}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    repo = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent
    print(layout_figures(repo.resolve() / PACKAGE))
