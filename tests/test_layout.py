"""The layout's rules, checked on the source: which folder may import what.

- engine/ serves requests; the toy lab (engine/toy/) builds and trains the built-in model and runs
  the demo. The serving engine never imports the lab (it loads the built-in model from its
  directory), the server or the client: it can be driven from a notebook.
- engine/ and kernels/ never import grpc; kernels/ never imports diffusers.
- server/ uses the engine through its public names only: it imports no underscored name from
  the engine and reads no underscored attribute of anything but its own objects (``self``).
- client/ never imports the engine: what it shares with the server side is ``framecast.common``
  (proto/framecast/common), which imports no other part of framecast, nor torch or gRPC. The one
  way from the client to engine/ is the command line's, to the toy lab's commands.
- No framecast module imports itself again through others at import time: no import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(folder: str, exclude: str | None = None) -> list[Path]:
    paths = sorted((ROOT / folder).rglob("*.py"))
    return [p for p in paths if exclude is None or not p.is_relative_to(ROOT / exclude)]


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in the file, those inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def _offending(paths: list[Path], forbidden) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{line} imports {module}" for p in paths for line, module, names in _imports(p)
            if forbidden(module, names)]  # fmt: skip


def test_the_serving_engine_never_imports_the_toy_lab():
    assert _offending(_modules("engine", exclude="engine/toy"), lambda m, _: m.startswith("framecast.engine.toy")) == []


def test_the_serving_engine_never_imports_the_server_or_the_client():
    assert _offending(_modules("engine", exclude="engine/toy"),
                      lambda m, _: m.startswith(("framecast.server", "framecast.client"))) == []  # fmt: skip


def test_the_client_never_imports_the_engine():
    """The client library and its commands import nothing of engine/ (what they share with the
    server side is framecast.common), so a client-only install stays small by construction, not
    only because a run happens not to load torch. The one way in is the command line's: ``framecast``
    carries the toy lab's commands (make-tiny-model, train-toy-model, demo), as it carries the
    server's ``serve``, and client/cli reaches them in framecast.engine.toy alone."""
    def engine(path: Path):
        lab = path.is_relative_to(ROOT / "client" / "cli")
        return lambda m, _: m.startswith("framecast.engine") and not (lab and (m + ".").startswith("framecast.engine.toy."))

    assert [line for path in _modules("client") for line in _offending([path], engine(path))] == []


def test_common_imports_no_other_part_of_framecast_nor_torch_or_grpc():
    others = ("framecast.engine", "framecast.server", "framecast.client", "framecast.kernels", "framecast.v1")
    heavy = ("torch", "diffusers", "transformers", "triton", "grpc")
    assert _offending(_modules("proto/framecast/common"),
                      lambda m, _: m.startswith(others) or m.split(".")[0] in heavy) == []  # fmt: skip


# ---- import cycles ------------------------------------------------------------------------------

PACKAGE_DIRS = {"framecast": "proto/framecast", "framecast.engine": "engine", "framecast.server": "server",
                "framecast.kernels": "kernels", "framecast.client": "client"}  # pyproject's package-dir


def _module_paths() -> dict[str, Path]:
    """Every framecast module (a package by its __init__.py) and its file."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            found[".".join([package, *parts[:-1]] if parts[-1] == "__init__" else [package, *parts])] = path
    return found


def _imported_at_import(path: Path) -> list[str]:
    """What importing ``path`` imports: the modules named by its imports outside functions (those
    under ``if``, ``try`` and class bodies, and ``if TYPE_CHECKING:`` too, run or read at import),
    and for ``from X import name`` also ``X.name``, in case it is a module."""
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.extend([child.module, *(f"{child.module}.{alias.name}" for alias in child.names)])
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _import_graph() -> dict[str, set[str]]:
    """Module -> the framecast modules importing it runs. Importing ``a.b.c`` runs the packages
    ``a`` and ``a.b`` first, unless the importer is inside them (they are being imported already)."""
    modules = _module_paths()
    graph = {}
    for name, path in modules.items():
        graph[name] = set()
        for target in _imported_at_import(path):
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                inside = end < len(parts) and (name == prefix or name.startswith(prefix + "."))
                if prefix in modules and prefix != name and not inside:
                    graph[name].add(prefix)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
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
                    work.append((child, iter(sorted(graph[child]))))
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
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_framecast_module_imports_itself_through_others():
    """A cycle of imports works only while an import inside a function breaks it, and breaks when
    someone imports the modules in another order; what causes one is moved instead (the request
    types out of the engine's modules they were read in, for one)."""
    graph = _import_graph()
    assert {"framecast.engine.engine", "framecast.client.cli", "framecast.common.requests"} <= set(graph)
    assert _cycles(graph) == []


@pytest.mark.parametrize("folder", ["engine", "kernels"])
def test_engine_and_kernels_never_import_grpc(folder):
    assert _offending(_modules(folder), lambda m, _: m.split(".")[0] in ("grpc", "grpc_health", "grpc_reflection")) == []


def test_kernels_never_import_diffusers():
    assert _offending(_modules("kernels"), lambda m, _: m.split(".")[0] in ("diffusers", "transformers", "peft")) == []


def test_the_server_imports_no_private_name_of_the_engine():
    def private(module: str, names: list[str]) -> bool:
        return module.startswith("framecast.engine") and (
            any(part.startswith("_") for part in module.split(".")) or any(n.startswith("_") for n in names)
        )

    assert _offending(_modules("server"), private) == []


def test_the_server_reads_no_private_attribute_of_another_object():
    offending = []
    for path in _modules("server"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr == "_replace":  # a namedtuple's public copy method (grpc's handlers)
                continue
            offending.append(f"{path.relative_to(ROOT)}:{node.lineno} reads .{node.attr}")
    assert offending == []


def _forks(path: Path) -> list[str]:
    """Calls in ``path`` that fork this process and run Python in the child: ``os.fork``, the
    "fork" start method (also a multiprocessing Pool, Process or ProcessPoolExecutor made without
    a context, which forks on Linux), and ``subprocess`` with a ``preexec_fn``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        strings = [a.value for a in node.args if isinstance(a, ast.Constant)]
        keywords = {k.arg for k in node.keywords}
        if (
            name in ("os.fork", "os.forkpty")
            or (name.endswith(("get_context", "set_start_method")) and "fork" in strings)
            or name in ("multiprocessing.Pool", "multiprocessing.Process", "mp.Pool", "mp.Process")
            or (name.endswith("ProcessPoolExecutor") and len(node.args) < 2 and "mp_context" not in keywords)
            or "preexec_fn" in keywords
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)[:80]}")
    return found


def test_nothing_forks_a_process_that_may_hold_threads():
    """A forked child inherits every lock another thread held at the fork, held for good: a gRPC
    server, Ray or tqdm's monitor thread in the parent can leave it waiting forever (the suite hung
    this way). Worker processes start with spawn or forkserver, subprocesses without Python in the
    child."""
    paths = [p for folder in ("engine", "server", "kernels", "client", "bench", "tests") for p in _modules(folder)]
    assert [line for p in paths if p != Path(__file__) for line in _forks(p)] == []
