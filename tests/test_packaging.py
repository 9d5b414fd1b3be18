"""Building framecast's wheel warns nothing and ships every package and the built-in model.

The wheel is built by setuptools' own backend (what pip and ``python -m build`` call), in a
subprocess, from a copy of the sources: a build writes ``build/`` and ``*.egg-info`` beside them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11 on

ROOT = Path(__file__).resolve().parents[1]

BUILD = "from setuptools import build_meta; import sys; print(build_meta.build_wheel(sys.argv[1]))"


def _sources(target: Path) -> Path:
    """The files a build reads, copied under ``target``: pyproject.toml, the readme and the package dirs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    target.mkdir()
    shutil.copy(ROOT / "pyproject.toml", target)
    shutil.copy(ROOT / "README.md", target)
    for folder in config["package-dir"].values():
        shutil.copytree(ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def test_the_wheel_builds_without_warnings_and_carries_the_builtin_model(tmp_path):
    sources = _sources(tmp_path / "src")
    # -I: the sources' top-level folders (kernels/, server/...) must not shadow installed modules.
    built = subprocess.run([sys.executable, "-I", "-c", BUILD, str(tmp_path / "dist")], cwd=sources,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert built.returncode == 0, built.stderr
    said = built.stdout + built.stderr
    assert not re.findall(r"\w+Warning: .*", said), said  # e.g. "Package 'framecast.engine.assets' is absent ..."

    with zipfile.ZipFile(tmp_path / "dist" / built.stdout.strip().splitlines()[-1]) as wheel:
        names = set(wheel.namelist())
    assets = ROOT / "engine" / "assets"
    shipped = {f"framecast/engine/assets/{p.relative_to(assets).as_posix()}" for p in assets.rglob("*") if p.is_file()}
    assert shipped and shipped <= names
    assert "framecast/engine/assets/toy-wan-i2v/transformer/diffusion_pytorch_model.safetensors" in names
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in packages:
        if package != "framecast.engine.assets":  # data alone
            assert f"{package.replace('.', '/')}/__init__.py" in names, package
