"""No import circles in the package: the modules of ``src/retake`` form a graph without cycles
(an import inside a function counts: it is a circle all the same, only deferred)."""

from __future__ import annotations

import ast
import os

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def modules() -> dict[str, str]:
    """module name -> file, for every module of the package (a package is its ``__init__``)."""
    out = {}
    for folder, _, files in os.walk(os.path.join(SRC, "retake")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def known(name: str) -> str | None:
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in mods else None

    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                if not node.level:
                    base = node.module
                elif node.module:
                    base = f"{base}.{node.module}"
                # `from . import x` imports the submodule x; `from .m import f` the module m
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs or [base]
            else:
                continue
            for t in targets:
                t = known(t) if t else None
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    graph = import_graph()
    assert "retake.engine.engine" in graph and "retake.methods.base" in graph["retake.engine.engine"]
    assert cycles(graph) == []


def test_the_pipeline_and_the_engine_import_no_method():
    """The pipeline and the engine know the Method interface only (``retake.methods.base``): a
    method that refits the input (``fit_input``) or reads a proxy guide needs no edit there."""
    graph = import_graph()
    for mod in ("retake.pipeline", "retake.engine.engine", "retake.engine.cache", "retake.engine.attention"):
        methods = sorted(t for t in graph[mod] if t == "retake.methods" or t.startswith("retake.methods."))
        assert methods in ([], ["retake.methods.base"]), (mod, methods)
