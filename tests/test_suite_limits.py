"""The suite cannot hang: every test has a time limit (pytest-timeout, set in pyproject.toml), and
the limit ends a test blocked on a lock, naming it, while the rest of the run goes on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_has_a_limit_of_minutes():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < options["timeout"] <= 600
    assert options["timeout_method"] == "signal"  # fails the one test; "thread" would end the whole run


def test_a_test_blocked_on_a_lock_fails_at_its_limit_and_the_run_goes_on(tmp_path):
    (tmp_path / "test_hangs.py").write_text(textwrap.dedent('''
        import threading

        def test_waits_for_a_lock_nobody_releases():
            held = threading.Lock()
            held.acquire()
            threading.Thread(target=held.acquire, daemon=True).start()
            held.acquire()  # as a forked child waits on a lock a thread of its parent held

        def test_after_it():
            pass
    '''))
    # The project's own limit settings, shortened: the mechanism is what is checked here.
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 2\ntimeout_method = signal\n")
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert time.monotonic() - started < 60
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED test_hangs.py::test_waits_for_a_lock_nobody_releases" in run.stdout
    assert "Timeout (>2.0s)" in run.stdout and "1 passed" in run.stdout
