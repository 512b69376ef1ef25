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
    source = source_for(tmp_path, min_age=0.3)
    found = {f.path: f for f in source.list()}
    assert found["old.bin"].size == 5 and found["new.bin"].size == 3
    assert found["old.bin"].mtime == pytest.approx(os.stat(tmp_path / "old.bin").st_mtime)
    # first seen now: an old time proves nothing (a FAT drive written in local time), each waits min_age of our clock
    assert not found["old.bin"].complete and not found["new.bin"].complete
    time.sleep(0.4)
    assert all(f.complete for f in source.list())


def test_a_file_dated_hours_ahead_is_complete_after_min_age_of_our_clock(tmp_path):
    """A camera whose clock was never set: the file's time is hours ahead of ours. It must not wait for our clock to
    catch up (the old rule, now - mtime >= min_age, held it for three hours)."""
    touch(str(tmp_path / "clip.mp4"), b"x" * 1000)
    ahead = time.time() + 3 * 3600
    os.utime(tmp_path / "clip.mp4", (ahead, ahead))
    source = source_for(tmp_path, min_age=0.3)
    assert [f.complete for f in source.list()] == [False]
    time.sleep(0.4)
    assert [f.complete for f in source.list()] == [True]


def test_a_file_dated_in_the_past_is_not_complete_while_it_grows(tmp_path):
    """A FAT drive written in local time behind ours: every write leaves a time hours in the past. The file is
    complete only once its size and time stop changing for min_age, never while it grows."""
    path = tmp_path / "flight.log"
    behind = time.time() - 5 * 3600
    source = source_for(tmp_path, min_age=0.3)
    for step in range(8):
        with open(path, "ab") as handle:
            handle.write(b"y" * 100)
        os.utime(path, (behind + step, behind + step))
        assert [f.complete for f in source.list()] == [False], f"complete while growing (step {step})"
        time.sleep(0.1)
    time.sleep(0.4)
    assert [(f.size, f.complete) for f in source.list()] == [(800, True)]


def test_a_file_gone_from_the_listing_is_forgotten(tmp_path):
    """Only the files of the last listing are remembered: one that was removed and comes back (the same size and
    time) is seen anew and waits min_age again."""
    touch(str(tmp_path / "a.bin"), b"abc", age=60)
    stamp = os.stat(tmp_path / "a.bin").st_mtime
    source = source_for(tmp_path, min_age=0.3)
    list(source.list())
    time.sleep(0.4)
    assert [f.complete for f in list(source.list())] == [True]
    os.rename(tmp_path / "a.bin", tmp_path / ".a.bin")  # the default exclude hides it
    assert list(source.list()) == []
    os.rename(tmp_path / ".a.bin", tmp_path / "a.bin")
    os.utime(tmp_path / "a.bin", (stamp, stamp))
    assert [f.complete for f in list(source.list())] == [False]


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
