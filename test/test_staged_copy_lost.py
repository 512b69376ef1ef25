"""A staged copy that is gone before its uploads (a power cut lost its directory entry, someone cleaned staging): the
version is copied again while the source still holds it, and parked saying why when it does not."""
import os

import pytest

from filesync.config import load_config
from filesync.devices.folder import FolderSource
from filesync.engine import transfer
from filesync.engine.runner import LocalRunner
from filesync.engine.transfer import Job, Settings, StagedCopyLost
from filesync.errors import PermanentError
from filesync.ledger.store import Ledger
from test_content import folder_config, wait_for


def staged_until_the_target_returns(tmp_path, data, delete=False):
    """A runner whose target folder is away: the file is staged and its upload waits. Returns (runner, record)."""
    config = folder_config(tmp_path, delete=delete)
    os.rmdir(tmp_path / "out")
    (tmp_path / "inbox" / "a.log").write_bytes(data)
    runner = LocalRunner(config)
    runner.start()
    wait_for(lambda: getattr(runner.ledger.find("inbox", "a.log"), "state", "") == "downloaded", what="the copy")
    return runner, runner.ledger.find("inbox", "a.log"), load_config(config).staging_dir


def test_a_lost_staged_copy_is_copied_again_from_the_source_and_delivered(tmp_path):
    data = os.urandom(300_000)
    runner, record, staging = staged_until_the_target_returns(tmp_path, data, delete=True)
    try:
        os.remove(os.path.join(staging, "inbox", str(record.id)))
        os.mkdir(tmp_path / "out")
        wait_for(lambda: runner.ledger.get(record.id).state in ("removed", "failed"), what="the delivery")
        final = runner.ledger.get(record.id)
    finally:
        runner.close()
    assert final.state == "removed", final.error
    assert (tmp_path / "out" / "a.log").read_bytes() == data
    assert final.task("download").attempts == 0 and final.task("upload").attempts == 1  # the copy lost: one attempt
    assert not (tmp_path / "inbox" / "a.log").exists()


def test_a_lost_staged_copy_of_a_file_the_source_no_longer_holds_is_parked_saying_so(tmp_path):
    runner, record, staging = staged_until_the_target_returns(tmp_path, b"x" * 1000)
    try:
        os.remove(os.path.join(staging, "inbox", str(record.id)))
        os.remove(tmp_path / "inbox" / "a.log")
        os.mkdir(tmp_path / "out")
        wait_for(lambda: runner.ledger.get(record.id).state == "failed", what="the file parked")
        final = runner.ledger.get(record.id)
    finally:
        runner.close()
    assert "was lost and the source no longer holds the file" in final.error
    assert final.task("download").state == "parked" and final.task("upload").state == "waiting"


def test_a_lost_staged_copy_whose_source_holds_other_bytes_under_the_same_size_and_time_is_parked(tmp_path):
    """The source's size and time prove too little: the copy made again must have the version's SHA-256."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "a.bin"
    path.write_bytes(b"A" * 5000)
    stamp = path.stat().st_mtime
    source = FolderSource("inbox", {"path": str(inbox)}, "sources.inbox")
    ledger = Ledger(str(tmp_path / "ledger.db"))
    settings = Settings(staging_dir=str(tmp_path / "staging"))
    [record] = ledger.register("inbox", ["out"], False, [("a.bin", 5000, stamp)])
    record, task = ledger.claim("download", "inbox", "w", 30)
    done = transfer.download(source, Job(ledger, "w", settings, record, task))
    ledger.finish(record.id, "download", "inbox", "w", "done", sha256=done.sha256)
    os.remove(done.location)
    record, task = ledger.claim("upload", "out", "w", 30)
    with pytest.raises(StagedCopyLost, match="is missing"):
        transfer.upload(None, Job(ledger, "w", settings, record, task))
    with pytest.raises(ValueError):  # only an upload sends its version back
        ledger.finish(record.id, "download", "inbox", "w", "restage")
    after = ledger.finish(record.id, "upload", "out", "w", "restage", "the staged copy is missing")
    assert (after.state, after.task("download").state, after.task("download").offset) == ("found", "waiting", 0)
    assert after.task("upload").state == "waiting" and after.task("upload").attempts == 1
    assert ledger.finish(record.id, "upload", "out", "w", "restage", "again").task("download").state == "waiting"
    path.write_bytes(b"B" * 5000)
    os.utime(path, (stamp, stamp))
    record, task = ledger.claim("download", "inbox", "w", 30)
    with pytest.raises(PermanentError, match="holds other bytes under the same size and time"):
        transfer.download(source, Job(ledger, "w", settings, record, task))
    assert not os.path.exists(done.location)  # the other bytes are not staged as this version
    ledger.close()


def test_staging_that_keeps_losing_copies_parks_the_file_after_max_attempts(tmp_path):
    """Each lost copy counts an attempt of the upload: a staging cleaned again and again does not cost a copy from
    the source forever."""
    from filesync.devices.folder import FolderTarget
    from filesync.engine.workers import TaskWorker
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.bin").write_bytes(b"A" * 5000)
    source = FolderSource("inbox", {"path": str(inbox)}, "sources.inbox")
    target = FolderTarget("out", {"path": str(tmp_path / "out")}, "targets.out")
    os.mkdir(tmp_path / "out")
    ledger = Ledger(str(tmp_path / "ledger.db"))
    settings = Settings(staging_dir=str(tmp_path / "staging"), max_attempts=2)
    downloader = TaskWorker("download", source, ledger, "w/download", settings)
    uploader = TaskWorker("upload", target, ledger, "w/upload", settings)
    [record] = ledger.register("inbox", ["out"], False, [("a.bin", 5000, (inbox / "a.bin").stat().st_mtime)])
    staged = os.path.join(settings.staging_dir, "inbox", str(record.id))
    for _ in range(2):
        assert downloader.step()
        os.remove(staged)
        uploader.step()
    final = ledger.get(record.id)
    ledger.close()
    assert final.state == "failed" and final.task("upload").state == "parked"
    assert "is missing" in final.task("upload").error and final.task("download").state == "done"
    assert not (tmp_path / "out" / "a.bin").exists()
