"""``kgraft.backends.atomic``: outputs appear whole or not at all, and replace only when asked."""

from __future__ import annotations

import os

import pytest

from kgraft import KgraftError
from kgraft.backends.atomic import replacing, write_files


def test_directory_appears_only_when_complete(tmp_path):
    target = tmp_path / "out"
    with replacing(target) as tmp:
        (open(os.path.join(tmp, "a.txt"), "w")).write("a")
        assert not target.exists()  # nothing that looks complete while writing
    assert os.listdir(target) == ["a.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_failure_halfway_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with replacing(tmp_path / "out") as tmp:
            open(os.path.join(tmp, "part0"), "w").write("x")
            raise RuntimeError("conversion failed")
    assert os.listdir(tmp_path) == []


def test_existing_output_kept_unless_overwrite(tmp_path):
    target = tmp_path / "out"
    write_files(target, {"old.txt": b"old"})
    with pytest.raises(KgraftError, match="is not empty; pass --force to replace it"):
        write_files(target, {"new.txt": b"new"}, flag="--force")
    assert os.listdir(target) == ["old.txt"]
    with pytest.raises(RuntimeError):  # a failed replacement keeps the old content
        with replacing(target, overwrite=True):
            raise RuntimeError
    assert os.listdir(target) == ["old.txt"]
    write_files(target, {"new.txt": b"new"}, overwrite=True)
    assert os.listdir(target) == ["new.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_empty_directory_is_not_an_existing_output(tmp_path):
    (tmp_path / "out").mkdir()
    write_files(tmp_path / "out", {"a": b"1"})
    assert os.listdir(tmp_path / "out") == ["a"]


def test_single_file(tmp_path):
    target = tmp_path / "g.svg"
    with replacing(target, directory=False) as tmp:
        assert os.path.basename(tmp) == "g.svg"
        open(tmp, "w").write("one")
    with pytest.raises(KgraftError, match="already exists"):
        with replacing(target, directory=False):
            pass
    with replacing(target, directory=False, overwrite=True) as tmp:
        open(tmp, "w").write("two")
    assert target.read_text() == "two" and os.listdir(tmp_path) == ["g.svg"]
    with pytest.raises(KgraftError, match="is a directory"):
        with replacing(tmp_path, directory=False):
            pass
