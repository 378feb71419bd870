"""Write an output (a directory or one file) all at once, so a failure never leaves half of it.

Everything is written into a temporary sibling of the target (same file system) and renamed
into place at the end; an existing target is replaced only with ``overwrite=True``, and then
only after the new content is complete. A crash or an error halfway leaves at most a hidden
``.NAME.tmp-*`` entry, never something that looks like a finished output.

    with replacing("out/parts", overwrite=force) as tmp:   # tmp: an empty directory
        model.save(os.path.join(tmp, "part0.keras"))
    with replacing("graph.svg", directory=False) as tmp:    # tmp: a file path to write
        open(tmp, "w").write(svg)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from ..ir import KgraftError

__all__ = ["check_target", "replacing", "write_files"]


def check_target(path: str, overwrite: bool = False, *, what: str = "output", directory: bool = True,
                 flag: str = "overwrite=True") -> None:
    """Raise :class:`KgraftError` unless ``path`` may be written: absent, an empty directory, or
    ``overwrite``. ``flag`` is how the caller's user asks for overwriting (``--force``)."""
    if not os.path.lexists(path):
        return
    if directory and not os.path.isdir(path):
        raise KgraftError(f"{what}: {path!r} exists and is not a directory")
    if not directory and os.path.isdir(path):
        raise KgraftError(f"{what}: {path!r} is a directory; give a file name")
    if overwrite or (directory and not os.listdir(path)):
        return
    state = "is not empty" if directory else "already exists"
    raise KgraftError(f"{what}: {path!r} {state}; pass {flag} to replace it or choose a new "
                      f"{'directory' if directory else 'name'}")


@contextlib.contextmanager
def replacing(path, *, overwrite: bool = False, directory: bool = True, what: str = "output",
              flag: str = "overwrite=True") -> Iterator[str]:
    """Yield a temporary directory (or file path) that replaces ``path`` when the block succeeds."""
    path = os.path.abspath(os.fspath(path))
    check_target(path, overwrite, what=what, directory=directory, flag=flag)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        yield tmp if directory else os.path.join(tmp, name)
        check_target(path, overwrite, what=what, directory=directory, flag=flag)  # it may have appeared meanwhile
        if directory:
            _swap_dir(tmp, path)
            os.chmod(path, 0o777 & ~_umask())
        else:
            os.replace(os.path.join(tmp, name), path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_files(path, files: dict[str, bytes], *, overwrite: bool = False, what: str = "output",
                flag: str = "overwrite=True") -> None:
    """Write ``{name: content}`` as the directory ``path``, atomically."""
    with replacing(path, overwrite=overwrite, what=what, flag=flag) as tmp:
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)


def _swap_dir(new: str, path: str) -> None:
    """Rename ``new`` to ``path``; an existing ``path`` is moved aside first and deleted after."""
    old = None
    if os.path.isdir(path):
        if os.listdir(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=os.path.dirname(path))
            os.rmdir(old)
            os.rename(path, old)
        else:
            os.rmdir(path)
    try:
        os.rename(new, path)
    except BaseException:
        if old is not None and not os.path.exists(path):
            os.rename(old, path)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
