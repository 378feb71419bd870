"""``exitcode.py CMD [ARGS...]``: run CMD, pass its output (stderr merged) through, then print
``exit code: N`` on stdout and exit 0, so a lit test can check the exact exit code with
filecheck (lit's ``not`` only checks that it is non-zero)."""

import shutil
import subprocess
import sys

if len(sys.argv) < 2:
    sys.exit("usage: exitcode.py CMD [ARGS...]")
cmd = [shutil.which(sys.argv[1]) or sys.argv[1], *sys.argv[2:]]
proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
sys.stdout.write(proc.stdout)
print(f"exit code: {proc.returncode}")
