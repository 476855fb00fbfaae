"""The library's import graph: no cycle, every module importable alone, a Config without torch."""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import discomm_lite

PACKAGE = Path(discomm_lite.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], "discomm_lite."))
# Modules the Config, the CLI and the run log need: they must not pull in torch.
LIGHT = ("discomm_lite", "discomm_lite.config", "discomm_lite.choices", "discomm_lite.method",
         "discomm_lite.method.registry", "discomm_lite.method.bits", "discomm_lite.method.simdino",
         "discomm_lite.method.dino", "discomm_lite.config.presets", "discomm_lite.config.view_spec",
         "discomm_lite.training.runlog", "discomm_lite.training.schedules", "discomm_lite.cli")
HEAVY = ("torch", "torchvision", "numpy", "timm", "PIL")


def _path(module: str) -> Path:
    relative = Path(*module.split(".")[1:])
    package = PACKAGE / relative / "__init__.py"
    return package if package.is_file() else (PACKAGE / relative).with_suffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(module: str) -> set[str]:
    """The discomm_lite modules `module` imports, anywhere in its code but `if TYPE_CHECKING:`."""
    tree = ast.parse(_path(module).read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from package import submodule` imports the submodule
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in MODULES or m == "discomm_lite"} - {module}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return components


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_library():
    graph = {m: _imports(m) for m in MODULES}
    assert "discomm_lite.data.types" in graph["discomm_lite.data.cifar"]  # the walk sees imports
    assert _cycles(graph) == []


def test_every_module_imports_on_its_own():
    # Each module is imported first, with no other discomm_lite module loaded before it.
    script = (
        "import sys, importlib, json\n"
        "failed = {}\n"
        f"for name in {[m for m in MODULES if m != 'discomm_lite.__main__']!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('discomm_lite')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        failed[name] = repr(e)\n"
        "print(json.dumps(failed))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}


def test_the_config_and_the_cli_import_nothing_heavy():
    script = (
        "import sys, json\n"
        f"for name in {LIGHT!r}:\n"
        "    __import__(name)\n"
        "from discomm_lite.config import PRESETS, Config, make_config\n"
        "for preset in PRESETS:\n"
        "    make_config(preset).beta\n"
        "Config(method='dino').rate_input\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# ---- the layout: folders by concern, arrows one way ----------------------------------------------
# The subpackages from the bottom up: a module may import its own package and any package of a
# lower rank, never a higher one (ARCHITECTURE.md). The top-level modules shared by all are rank 0;
# the entry points (`cli`, the package itself) sit above everything.
RANKS = {
    "shared": 0, "method": 1, "data": 1, "config": 2, "views": 3, "models": 3, "training": 4,
    "evaluation": 5, "viz": 6, "api": 6, "teach": 7, "entry": 8,
}
SHARED = {"choices", "atomic", "safe_pickle", "distributed", "devices", "arguments"}
ENTRY = {"", "cli", "__main__"}
MAX_LINES = 350


def _package(module: str) -> str:
    """The layout's name for where `module` lives: a subpackage, "shared", "api" or "entry"."""
    parts = module.split(".")[1:]
    if parts == ["api"]:  # training joined with its evaluation: what teach and the CLI call
        return "api"
    if not parts or (len(parts) == 1 and parts[0] in ENTRY):
        return "entry"
    if len(parts) == 1 and parts[0] in SHARED:
        return "shared"
    return parts[0]


def _wrong_way(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                  if _package(d) != _package(m)
                  and RANKS[_package(d)] >= RANKS[_package(m)])


def test_every_module_has_a_place_in_the_layout():
    assert {_package(m) for m in MODULES} <= set(RANKS)


def test_arrows_between_the_subpackages_point_one_way():
    assert _wrong_way({m: _imports(m) for m in MODULES}) == []


def test_the_arrow_check_finds_an_arrow_the_wrong_way():
    graph = {"discomm_lite.training.engine": {"discomm_lite.evaluation.metrics"},
             "discomm_lite.evaluation.suite": {"discomm_lite.training.checkpoint"},
             "discomm_lite.method.dino": {"discomm_lite.distributed"}}
    assert _wrong_way(graph) == ["discomm_lite.training.engine -> discomm_lite.evaluation.metrics"]


def test_no_module_is_over_the_size_a_reader_holds():
    sizes = {m: len(_path(m).read_text().splitlines()) for m in MODULES}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
