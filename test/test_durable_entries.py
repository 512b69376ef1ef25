"""Directory entries made durable: the folder holding a new folder, a new staged .part or a renamed lease file is
fsynced before anything relies on the entry. A power cut cannot be simulated here, so these tests record which
directories os.fsync was called on (and when), and check them."""
import os
import stat

import pytest

from filesync.devices.folder import FolderSource
from filesync.engine import transfer
from filesync.engine.transfer import Job, Settings
from filesync.ledger.store import Ledger
from filesync.lock import LeaseTable


@pytest.fixture
def events(monkeypatch):
    """What happened, in order: ("fsync", directory) for each directory fsynced (files are left out)."""
    happened = []
    real_fsync = os.fsync

    def fsync(descriptor):
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            happened.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return happened


def test_the_ledgers_new_folders_are_fsynced_into_their_parents(tmp_path, events):
    Ledger(str(tmp_path / "var" / "filesync" / "ledger.db")).close()
    assert ("fsync", str(tmp_path)) in events  # holds the new 'var'
    assert ("fsync", str(tmp_path / "var")) in events  # holds the new 'filesync'


def test_the_lease_files_rename_is_fsynced(tmp_path, events):
    table = LeaseTable(str(tmp_path / "leases.json"))
    assert table.acquire("vehicle", "me", 10.0).granted
    assert events == [("fsync", str(tmp_path))]


def test_a_new_downloads_folders_and_part_are_fsynced_before_its_first_checkpoint(tmp_path, events):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.bin").write_bytes(b"x" * 300_000)
    ledger = Ledger(str(tmp_path / "ledger.db"))
    real_checkpoint = ledger.checkpoint

    def checkpoint(*args, **kwargs):
        events.append(("checkpoint",))
        return real_checkpoint(*args, **kwargs)

    ledger.checkpoint = checkpoint
    [record] = ledger.register("inbox", ["out"], False, [("a.bin", 300_000, (inbox / "a.bin").stat().st_mtime)])
    record, task = ledger.claim("download", "inbox", "w", 30)
    settings = Settings(staging_dir=str(tmp_path / "staging"), checkpoint_bytes=64 * 1024)
    del events[:]
    transfer.download(FolderSource("inbox", {"path": str(inbox)}, "sources.inbox"),
                      Job(ledger, "w", settings, record, task))
    first_checkpoint = events.index(("checkpoint",))
    before = events[:first_checkpoint]
    assert ("fsync", str(tmp_path)) in before  # holds the new 'staging'
    assert ("fsync", str(tmp_path / "staging")) in before  # holds the new 'staging/inbox'
    assert ("fsync", str(tmp_path / "staging" / "inbox")) in before  # holds the new .part
    assert events[-1] == ("fsync", str(tmp_path / "staging" / "inbox"))  # the final name, after the rename
    ledger.close()


def test_a_recorded_delivery_is_renamed_into_place_and_fsynced(tmp_path, events):
    """The staged version's <id>.json says where it was delivered (a ledger rebuilt from staging relies on it)."""
    from filesync.ledger.recovery import read_staged_meta, record_delivery, write_staged_meta
    from filesync.ledger.store import FileRecord
    final = str(tmp_path / "7")
    write_staged_meta(final, FileRecord(7, "inbox", "a.bin", 3, 1.0, "downloaded"), "ab" * 32, "")
    del events[:]
    assert record_delivery(final, "out", "/out/a.bin")
    assert read_staged_meta(final)["delivered"] == {"out": "/out/a.bin"}
    assert events == [("fsync", str(tmp_path))]


def test_a_small_downloads_folder_is_fsynced_once_after_both_names_and_before_its_finish(tmp_path, events,
                                                                                        monkeypatch):
    """Under checkpoint_bytes nothing is recorded before the finish, so the new .part's entry needs no fsync of its
    own: the staged copy and its <id>.json are renamed into place, then one fsync of the folder makes both durable,
    and only then does download() return (the finish records it)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.bin").write_bytes(b"x" * 20_000)
    ledger = Ledger(str(tmp_path / "ledger.db"))
    [record] = ledger.register("inbox", ["out"], False, [("a.bin", 20_000, (inbox / "a.bin").stat().st_mtime)])
    record, task = ledger.claim("download", "inbox", "w", 30)
    settings = Settings(staging_dir=str(tmp_path / "staging"), checkpoint_bytes=64 * 1024)
    staged = tmp_path / "staging" / "inbox"
    staged.mkdir(parents=True)
    real_fsync = os.fsync

    def fsync(descriptor):  # what the folder held when it was fsynced
        if os.readlink(f"/proc/self/fd/{descriptor}") == str(staged):
            events.append(("names", sorted(os.listdir(staged))))
        return real_fsync(descriptor)
    monkeypatch.setattr(os, "fsync", fsync)
    del events[:]
    transfer.download(FolderSource("inbox", {"path": str(inbox)}, "sources.inbox"),
                      Job(ledger, "w", settings, record, task))
    of_staging = [event for event in events if event[0] == "names"]
    assert of_staging == [("names", [str(record.id), f"{record.id}.json"])], of_staging
    assert events[-1] == ("fsync", str(staged))
    assert ledger.get(record.id).task("download").offset == 0  # no checkpoint: the finish records it
    ledger.close()


def test_a_batch_of_small_files_fsyncs_each_folder_once_and_before_it_is_recorded(tmp_path, events):
    from filesync.engine.runner import LocalRunner
    from filesync.paths import staged_path
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    out.mkdir()
    for index in range(6):
        (inbox / f"f{index}.bin").write_bytes(os.urandom(1000))
    runner = LocalRunner({"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
                          "sources": {"in": {"kind": "folder", "path": str(inbox), "min_age": 0, "transfers": 1}},
                          "targets": {"out": {"kind": "folder", "path": str(out), "transfers": 1}},
                          "pipelines": [{"source": "in", "targets": ["out"]}]})
    real_finish, real_finish_batch = runner.ledger.finish, runner.ledger.finish_batch

    def finish(file_id, kind, *args):
        events.append(("finish", kind))
        return real_finish(file_id, kind, *args)

    def finish_batch(calls):  # the batch's finishes, recorded in one transaction
        events.extend(("finish", call[1]) for call in calls)
        return real_finish_batch(calls)

    runner.ledger.finish, runner.ledger.finish_batch = finish, finish_batch
    try:
        runner.run_until_settled(timeout=60)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        runner.close()
    staging = os.path.dirname(staged_path(str(tmp_path / "staging"), "in", 1))
    for kind, folder in (("download", staging), ("upload", str(out))):
        synced = [index for index, event in enumerate(events) if event == ("fsync", folder)]
        finished = [index for index, event in enumerate(events) if event == ("finish", kind)]
        assert len(finished) == 6
        assert len(synced) < 3, (kind, events)  # once a batch (the finder may register the six in two scans)
        # each batch's finishes (consecutive) come after an fsync of the folder made since the batch before
        starts = [index for number, index in enumerate(finished) if number == 0 or finished[number - 1] != index - 1]
        for previous_end, start in zip([-1] + [finished[finished.index(s) - 1] for s in starts[1:]], starts):
            assert any(previous_end < index < start for index in synced), (kind, events)
