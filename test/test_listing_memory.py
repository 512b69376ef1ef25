"""What the finder and a source's settling keep between listings (issue 18, goal 7: memory flat in the number of files).

They remember a listing by runs of entries (devices.base.listing_runs), one number a run, instead of every file: the
memory they keep for 20,000 files stays under 8 bytes a file (a dict of every file took about 200); and a changed
listing costs the ledger only the runs that changed. The source here is a list of RemoteFile in memory: listing order and content are what the
test needs to set; the folder source's own listing is tested in test_folder_source.py.
"""
import gc
import tracemalloc
from types import SimpleNamespace

from filesync.config import Pipeline
from filesync.devices.base import RUN_MAX, RemoteFile, Settling
from filesync.engine.transfer import Settings
from filesync.engine.workers import Finder

FILES = 20_000


class ListedSource:
    """A source whose listing is `files`, passed through Settling as the folder source does."""

    name = "cam"

    def __init__(self, files, min_age=0.0, clock=None):
        self.files = files
        self.settling = Settling(min_age, clock) if clock else Settling(min_age)

    def list(self):
        return self.settling.mark(iter(self.files))

    def close(self):
        pass


class CountingLedger:
    """Records what register() was given; every file is new the first time its path is seen."""

    def __init__(self):
        self.registered, self.paths = [], set()

    def register(self, source, targets, delete_after_upload, entries):
        self.registered.append([entry[0] for entry in entries])
        created = [SimpleNamespace(path=entry[0]) for entry in entries if entry[0] not in self.paths]
        self.paths.update(entry[0] for entry in entries)
        return created


def camera_files(count, folders=10):
    return [RemoteFile(f"DCIM/{index % folders:03d}/IMG_{index:06d}.JPG", 20_000 + index, 1.7e9 + index)
            for index in sorted(range(count), key=lambda index: (index % folders, index))]


def finder_for(source, ledger, tmp_path):
    return Finder(source, Pipeline("cam", ["out"]), ledger, Settings(staging_dir=str(tmp_path)))


def retained_after(action):
    """Bytes allocated by `action` that are still held once it returned (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_the_finder_keeps_far_less_than_a_file_s_worth_per_file(tmp_path):
    files = camera_files(FILES)
    counted = []
    ledger = SimpleNamespace(register=lambda source, targets, delete, entries: counted.append(len(entries)) or [])
    finder = finder_for(ListedSource(files), ledger, tmp_path)
    held = retained_after(finder.step)
    assert sum(counted) == FILES
    assert held < FILES * 8, f"the finder keeps {held} bytes for {FILES} files"  # keeping each file: ~200 bytes a file


def test_a_listing_seen_before_costs_the_ledger_nothing_and_a_new_file_only_its_run(tmp_path):
    files = camera_files(FILES)
    ledger = CountingLedger()
    finder = finder_for(ListedSource(files), ledger, tmp_path)
    finder.step()
    calls = len(ledger.registered)
    finder.step()
    assert len(ledger.registered) == calls  # unchanged: not one entry sent again
    middle = RemoteFile("DCIM/004/IMG_0123456.JPG", 5, 1.8e9)  # sorts among the other files of its folder
    position = next(index for index, found in enumerate(files) if found.path > middle.path)
    finder.source.files = files[:position] + [middle] + files[position:]
    finder.step()
    sent = [path for call in ledger.registered[calls:] for path in call]
    assert middle.path in sent
    assert len(sent) <= RUN_MAX  # its run alone, wherever it sorts


def test_a_forgotten_file_is_registered_again_with_its_run_only(tmp_path):
    files = camera_files(2_000)
    ledger = CountingLedger()
    finder = finder_for(ListedSource(files), ledger, tmp_path)
    finder.step()
    calls = len(ledger.registered)
    finder.forget(files[1_500].path)
    finder.step()
    sent = [path for call in ledger.registered[calls:] for path in call]
    assert files[1_500].path in sent and len(sent) <= RUN_MAX
    finder.step()
    assert len(ledger.registered) == calls + 1  # once: the next scan knows its run again


def test_settling_keeps_little_once_files_are_still_and_still_waits_for_a_growing_one():
    now = [0.0]
    files = camera_files(FILES)
    source = ListedSource(files, min_age=2.0, clock=lambda: now[0])
    assert not any(found.complete for found in source.list())  # first seen: each waits min_age
    now[0] = 2.5
    held = retained_after(lambda: list(source.list()))
    assert held < FILES * 8, f"settling keeps {held} bytes for {FILES} still files"
    now[0] = 5.0
    growing = RemoteFile("DCIM/009/IMG_999999.JPG", 10, 1.9e9)
    source.files = files + [growing]
    listed = {found.path: found.complete for found in source.list()}
    assert listed[growing.path] is False
    for step in range(3):  # it keeps growing: never complete; every other file is
        now[0] += 2.5
        source.files = files + [RemoteFile(growing.path, 20 + step, 1.9e9 + step)]
        listed = {found.path: found.complete for found in source.list()}
        assert listed[growing.path] is False
        assert sum(listed.values()) == FILES
    now[0] += 2.5
    listed = {found.path: found.complete for found in source.list()}
    assert listed[growing.path] is True  # still for min_age at last
