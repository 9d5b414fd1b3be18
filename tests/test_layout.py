"""The layout's rules, checked on the source: which folder may import what.

- engine/ serves requests; the toy lab (engine/toy/) builds and trains the built-in model. The
  serving engine never imports the lab: it loads the built-in model from its directory.
- engine/ and kernels/ never import grpc; kernels/ never imports diffusers.
- server/ uses the engine through its public names only: it imports no underscored name from
  the engine and reads no underscored attribute of anything but its own objects (``self``).
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
