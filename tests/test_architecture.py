"""The map in ARCHITECTURE.md, held by the code: what each room of edge/ may import, no import circles anywhere in
the package, edge/ free of torch, and `import smoothdino.edge` cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "edge", "models", "export", "calibration", "benchmarks")
METHOD = ("pipeline", "motion", "keyframes", "carry", "tracking", "fusion", "flicker", "asynchronous", "loop", "metrics", "api",
          "run_identity", "shared_network", "cameras", "batching")  # the frame method, top of edge/

# room -> the rooms it may import (ARCHITECTURE.md, "What may import what")
ALLOWED = {
    "core": {"core"},
    "edge.machine": {"core", "edge.machine"},
    "edge.engines": {"core", "edge.engines", "edge.machine"},
    "edge.sources": {"core", "edge.sources", "edge.machine"},
    "edge.sinks": {"core", "edge.sinks", "edge.sources", "edge.machine", "edge.method"},
    "edge.method": {"core", "edge.method", "edge.engines", "edge.machine", "edge.sources", "edge.sinks",
                    "edge.ros2"},  # api.py: the API's ROS 2 publisher
    "edge.ros2": {"core", "edge.ros2", "edge.sinks", "edge.sources", "edge.machine", "edge.method"},
    "edge.inspection": {"core", "edge.inspection", "edge.method", "edge.engines", "edge.machine", "edge.sources",
                        "edge.sinks"},
    "edge.web": {"core", "edge.web", "edge.sinks", "edge.sources"},
    "edge.commands": {"core", "edge.commands", "edge.method", "edge.engines", "edge.machine", "edge.sources",
                      "edge.sinks", "edge.inspection", "edge.web", "edge.ros2"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["smoothdino", *parts])


def imports(path: Path, module_level_only: bool) -> set[str]:
    """smoothdino modules `path` imports (relative ones resolved); with module_level_only, only those executed when
    the module loads (not inside functions: a function-level import is a deliberate lazy load)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # also imports inside module-level if/try blocks
        nodes = [n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 for n in ast.walk(top)]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.startswith("smoothdino"):
                # `from pkg import sub` imports the submodule
                found |= {f"{base}.{a.name}" if (ROOT / Path(*base.split(".")[1:], a.name)).exists()
                          or (ROOT / Path(*base.split(".")[1:], a.name + ".py")).exists() else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("smoothdino")}
    return found


def room(module: str) -> str:
    parts = module.split(".")[1:]  # drop "smoothdino"
    if parts[0] != "edge":
        return parts[0]
    if len(parts) == 1 or parts[1] in METHOD:
        return "edge.method"
    return f"edge.{parts[1]}"


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_room_imports_only_what_it_may():
    broken = []
    for path in sources():
        mine = room(module_name(path))
        if mine not in ALLOWED:
            continue
        for target in imports(path, module_level_only=False):
            if target == "smoothdino":
                continue
            if room(target) not in ALLOWED[mine]:
                broken.append(f"{path.relative_to(ROOT)} ({mine}) imports {target} ({room(target)})")
    assert not broken, "\n".join(broken)


def test_no_import_circles():
    graph = {module_name(p): {t for t in imports(p, module_level_only=False)} for p in sources()}
    graph = {m: {t for t in deps if t in graph and t != m} for m, deps in graph.items()}
    # a package's __init__ importing its own submodules is how a room exposes its surface, not a circle
    graph = {m: {t for t in deps if not t.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_edge_never_imports_torch_or_the_torch_side():
    offending = []
    for path in sorted((ROOT / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                if name.split(".")[0] in ("torch", "torchvision", "timm") or \
                        name.startswith(("smoothdino.models", "smoothdino.export", "smoothdino.calibration",
                                         "smoothdino.benchmarks", "smoothdino.cli")):
                    offending.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offending, "\n".join(offending)


def test_importing_the_run_time_is_cheap():
    """`import smoothdino.edge` loads no OpenCV, ONNX Runtime, rich or robotics library; its names load on use."""
    code = ("import sys, smoothdino.edge as e; heavy = [m for m in ('cv2', 'onnxruntime', 'rich', 'rosbags', "
            "'foxglove', 'tensorrt') if m in sys.modules]; print(heavy); e.DepthPipeline; print('cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"


@pytest.mark.parametrize("room_dir", ["engines", "sources", "sinks", "inspection", "machine", "commands", "web", "ros2"])
def test_every_room_says_what_it_is_and_exports_its_names(room_dir):
    init = ROOT / "edge" / room_dir / "__init__.py"
    tree = ast.parse(init.read_text())
    assert ast.get_docstring(tree) and len(ast.get_docstring(tree)) > 80
    exported = next((n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__all__"), None)
    if room_dir != "commands":  # the commands are called by cli.py by module, not re-exported
        names = {e.value for e in exported.value.elts}
        module = __import__(f"smoothdino.edge.{room_dir}", fromlist=["*"])
        assert names and all(hasattr(module, n) for n in names)


def test_the_install_ships_every_room():
    """pyproject.toml lists the packages by hand (the root is the package): a new room must be listed, or a plain
    `pip install` leaves it out (the editable install would not notice)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {module_name(init) for pkg in PACKAGES for init in (ROOT / pkg).rglob("__init__.py")}
    assert folders <= listed, sorted(folders - listed)
