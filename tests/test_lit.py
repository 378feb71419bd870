"""Runs the lit + filecheck golden tests under tests/lit (see tests/lit/lit.cfg.py).

Each ``.kgir`` / ``.py`` file there is a test: its ``RUN:`` lines run ``kgraft`` or a Python
script and pipe the output to ``filecheck``, which matches it against the file's ``CHECK:``
lines. This wrapper runs lit with the current interpreter, so ``kgraft`` and ``filecheck`` come
from the same environment, and fails with lit's report if any test fails (or an ``XFAIL``
test unexpectedly passes: then a known bug was fixed and its ``XFAIL`` line should go).

Run one test directly:  lit -v tests/lit/ir/roundtrip.kgir
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

LIT_DIR = Path(__file__).resolve().parent / "lit"
# The PyPI lit package has no __main__ (so no `python -m lit`): call its entry point.
_RUN_LIT = "import sys; from lit.main import main; sys.argv[0] = 'lit'; main()"


def test_lit_golden_tests(tmp_path):
    # lit and filecheck are test dependencies (pip install -e ".[test]"): missing, this fails.
    jobs = min(8, max(2, os.cpu_count() or 2))
    cmd = [sys.executable, "-c", _RUN_LIT, "-v", f"-j{jobs}", f"--param=exec_root={tmp_path}", str(LIT_DIR)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=900)
    report = proc.stdout
    discovered = re.search(r"Total Discovered Tests: (\d+)", report)
    assert proc.returncode == 0 and discovered and int(discovered.group(1)) > 0, (
        f"lit failed (exit code {proc.returncode}): {' '.join(cmd)}\n\n{report}"
    )
