"""FolderSource.list(): what a scan of a local folder yields, in which order, with which filters (a real directory)."""
import os
import time

import pytest

from filesync.devices.folder import FolderSource
from filesync.errors import DeviceUnavailable


def source_for(root, **options):
    return FolderSource("inbox", {"kind": "folder", "path": str(root), **options}, "sources.inbox")


def touch(path, data=b"x", age=0.0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    if age:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))


def test_lists_files_of_a_folder_before_its_subfolders_each_sorted(tmp_path):
    for name in ("b.bin", "a.bin", "sub2/x.bin", "sub1/z.bin", "sub1/deeper/y.bin", "sub1/c.bin"):
        touch(str(tmp_path / name))
    listed = [f.path for f in source_for(tmp_path, min_age=0.0).list()]
    assert listed == ["a.bin", "b.bin", "sub1/c.bin", "sub1/z.bin", "sub1/deeper/y.bin", "sub2/x.bin"]


def test_sizes_mtimes_and_min_age(tmp_path):
    touch(str(tmp_path / "old.bin"), b"12345", age=60)
    touch(str(tmp_path / "new.bin"), b"123")
    found = {f.path: f for f in source_for(tmp_path, min_age=30.0).list()}
    assert found["old.bin"].size == 5 and found["old.bin"].complete
    assert found["old.bin"].mtime == pytest.approx(os.stat(tmp_path / "old.bin").st_mtime)
    assert found["new.bin"].size == 3 and not found["new.bin"].complete


def test_include_and_exclude_match_the_relative_path_or_the_name(tmp_path):
    for name in ("logs/a.ulg", "logs/a.txt", "other/b.ulg", ".hidden.ulg", "logs/c.ulg.part", "logs/skip/d.ulg"):
        touch(str(tmp_path / name))
    listed = [f.path for f in source_for(tmp_path, min_age=0.0).list()]  # default exclude: dot files and .part
    assert listed == ["logs/a.txt", "logs/a.ulg", "logs/skip/d.ulg", "other/b.ulg"]
    listed = [f.path for f in source_for(tmp_path, min_age=0.0, include=["*.ulg"], exclude=["logs/skip/*"]).list()]
    assert listed == [".hidden.ulg", "logs/a.ulg", "other/b.ulg"]


def test_symlinks_a_linked_file_counts_a_linked_folder_and_a_dangling_link_do_not(tmp_path):
    outside = tmp_path / "outside"
    touch(str(outside / "real.bin"), b"abc")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside / "real.bin", root / "linked.bin")
    os.symlink(outside, root / "linked_dir")
    os.symlink(tmp_path / "missing", root / "dangling.bin")
    found = list(source_for(root, min_age=0.0).list())
    assert [(f.path, f.size) for f in found] == [("linked.bin", 3)]


def test_a_missing_folder_is_unavailable(tmp_path):
    with pytest.raises(DeviceUnavailable):
        list(source_for(tmp_path / "nowhere").list())
