"""The package's module graph: no import cycle (imports inside functions count too), and the pure layers stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# import name -> source folder (metrics/ and task_yamls/ install under radar_tasks.*; pyproject.toml)
ROOTS = {
    "radar_tasks": REPO / "radar_tasks",
    "radar_tasks.metrics": REPO / "metrics",
    "radar_tasks.task_yamls": REPO / "task_yamls",
}


def _modules() -> dict[str, Path]:
    out = {}
    for prefix, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([prefix, *parts])
            if (
                name.startswith("radar_tasks.")
                and name.split(".")[1] in ("metrics", "task_yamls")
                and folder == ROOTS["radar_tasks"]
            ):
                continue
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every package module `name` imports, anywhere in its body (a `from pkg import mod` names the module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from pkg import mod` depends on the module; `from mod import name` on the module itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            # the deepest package module the target names (`radar_tasks.metrics.sds.softmax` -> `...sds`)
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            # a module's own parent packages run before it anyway: no edge
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read():
    assert "radar_tasks.models.radar_hf" in MODULES and "radar_tasks.metrics.sds" in MODULES
    assert {"radar_tasks.prompts", "radar_tasks.models.protocol"} <= GRAPH["radar_tasks.models.radar_hf"]
    assert (
        "radar_tasks.sweep" in GRAPH["radar_tasks.demo.series"] and "radar_tasks.runner" in GRAPH["radar_tasks.sweep"]
    )


def test_no_import_cycle():
    assert _cycle() is None, " -> ".join(_cycle())


@pytest.mark.parametrize(
    "module",
    [
        "radar_tasks.metrics.sds",
        "radar_tasks.metrics.items",
        "radar_tasks.prompts",
        "radar_tasks.taxonomy",
        "radar_tasks.models.likelihood",
        "radar_tasks.models.prefix_sharing",
        "radar_tasks.models.pipeline",
        "radar_tasks.models.protocol",
        "radar_tasks.models.args",
        "radar_tasks.models.args_doc",
        "radar_tasks.models.loading",
        "radar_tasks.models.protocol_checks",
        "radar_tasks.models.questions",
        "radar_tasks.models.control_tokens",
        "radar_tasks.models.run_metadata",
        "radar_tasks.data.m3bench",
        "radar_tasks.analysis.stats",
    ],
)
def test_pure_layers_import_no_lmms_eval(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n.split(".")[0] in ("lmms_eval", "lm_eval")}
