"""lit configuration for kgraft's golden tests (lit + filecheck, as in MLIR and xDSL).

Run:  lit -v tests/lit          (or: pytest tests/test_lit.py)

* ``lower/*.py``   Python scripts that lower Keras models / configs and print the IR.
* ``ir/**.kgir``   textual IR run through ``kgraft opt``; ``ir/parse-errors.kgir`` holds the parse
                   errors, one per ``// -----`` chunk (``kgraft opt --split-input-file``, as mlir-opt).
* ``passes/``      one pass (or pipeline) per file; ``Inputs/`` dirs hold files tests read.
* ``pipeline/``    pass-pipeline errors; ``verify/`` verifier errors on textual input.

A test is expected to fail only with an ``XFAIL:`` line (a known bug): once fixed it reports
XPASS, which fails the suite, so the line is removed with the fix.

Substitutions: ``%python`` is the interpreter running lit, and that interpreter's bin
directory comes first on PATH, so ``kgraft`` and ``filecheck`` are the ones installed next to
it (the same virtual environment). ``%exitcode CMD...`` runs CMD, passes its output through,
prints ``exit code: N`` and succeeds, so a test can check the exact code.
"""

import os
import sys
import tempfile

import lit.formats

config.name = "kgraft"
config.suffixes = [".kgir", ".py"]
# The internal shell: lit >= 23 rejects ShTest(True) (external shell) unless forced, and the
# internal one has `not`, pipes and `2>&1` built in, on every platform.
config.test_format = lit.formats.ShTest(execute_external=False)
config.test_source_root = os.path.dirname(__file__)
# lit writes its scripts and %t files under Output/ dirs; keep them out of the source tree.
config.test_exec_root = lit_config.params.get("exec_root") or os.path.join(
    tempfile.gettempdir(), f"kgraft-lit-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
)
# Not tests: this file and the helper scripts.
config.excludes = ["lit.cfg.py", "tools", "Inputs", "Output", "__pycache__"]

tools = os.path.join(config.test_source_root, "tools")
config.substitutions.append(("%exitcode", f'"{sys.executable}" "{os.path.join(tools, "exitcode.py")}"'))
config.substitutions.append(("%python", f'"{sys.executable}"'))

bin_dir = os.path.dirname(sys.executable)
config.environment["PATH"] = os.pathsep.join([bin_dir, config.environment.get("PATH", os.environ.get("PATH", ""))])
for var in ("HOME", "USERPROFILE", "TMPDIR", "TEMP", "TMP", "KERAS_HOME", "VIRTUAL_ENV", "SYSTEMROOT"):
    if var in os.environ:
        config.environment[var] = os.environ[var]
config.environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
config.environment["KERAS_BACKEND"] = os.environ.get("KERAS_BACKEND", "tensorflow")
config.environment["PYTHONHASHSEED"] = "0"
config.environment["PYTHONIOENCODING"] = "utf-8"
# A CUDA probe on machines without a GPU only adds noise and time.
config.environment["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "-1")
