"""The ledger: claims, fenced checkpoints, outcomes, durability, and recovery from a corrupt file."""
import os
import sqlite3
import threading

import pytest

from filesync.config import load_config
from filesync.ledger.recovery import open_ledger, rebuild_from_staging, write_staged_meta
from filesync.ledger.store import FileRecord, Ledger


@pytest.fixture
def ledger(tmp_path):
    store = Ledger(str(tmp_path / "ledger.db"), retry_base=1.0, retry_cap=8.0)
    yield store
    store.close()


def test_register_creates_tasks_and_ignores_unchanged(ledger):
    created = ledger.register("cam", ["ftp", "web"], True, [("a.bin", 10, 1.0), ("b/c.bin", 0, 2.0)])
    assert [r.path for r in created] == ["a.bin", "b/c.bin"]
    record = created[0]
    assert record.state == "found"
    assert sorted((t.kind, t.device, t.state) for t in record.tasks) == [
        ("download", "cam", "waiting"), ("remove", "cam", "waiting"),
        ("upload", "ftp", "waiting"), ("upload", "web", "waiting")]
    assert ledger.register("cam", ["ftp", "web"], True, [("a.bin", 10, 1.0)]) == []


def test_changed_file_starts_again(ledger):
    ledger.register("cam", ["ftp"], False, [("a.bin", 10, 1.0)])
    record, task = ledger.claim("download", "cam", "w", 30)
    ledger.checkpoint(record.id, "download", "cam", "w", 5, 30)
    changed = ledger.register("cam", ["ftp"], False, [("a.bin", 20, 2.0)])
    assert len(changed) == 1 and changed[0].size == 20
    assert changed[0].task("download").offset == 0 and changed[0].task("download").state == "waiting"


def test_uploads_wait_for_download_and_removal_for_every_upload(ledger):
    ledger.register("cam", ["ftp", "web"], True, [("a.bin", 10, 1.0)])
    assert ledger.claim("upload", "ftp", "u", 30) is None
    record, _ = ledger.claim("download", "cam", "d", 30)
    ledger.finish(record.id, "download", "cam", "d", "done")
    assert ledger.get(record.id).state == "downloaded"
    assert ledger.claim("remove", "cam", "r", 30) is None
    for target in ("ftp", "web"):
        claimed, task = ledger.claim("upload", target, "u-" + target, 30)
        assert ledger.get(record.id).state == "uploading"
        ledger.finish(record.id, "upload", target, "u-" + target, "done", location=f"{target}://a.bin")
        if target == "ftp":
            assert ledger.claim("remove", "cam", "r", 30) is None
    assert ledger.get(record.id).state == "uploaded"
    claimed, _ = ledger.claim("remove", "cam", "r", 30)
    ledger.finish(record.id, "remove", "cam", "r", "done")
    final = ledger.get(record.id)
    assert final.state == "removed"
    assert final.task("upload", "web").location == "web://a.bin"


def test_no_two_workers_hold_a_task(ledger):
    ledger.register("cam", ["ftp"], False, [(f"f{i}", i, 1.0) for i in range(200)])
    taken = []
    lock = threading.Lock()

    def work(name):
        while True:
            claimed = ledger.claim("download", "cam", name, 30)
            if claimed is None:
                return
            with lock:
                taken.append(claimed[0].id)
            ledger.finish(claimed[0].id, "download", "cam", name, "done")

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(taken) == sorted(set(taken)) and len(taken) == 200


def test_lease_expiry_fences_the_old_holder(tmp_path):
    now = [1000.0]
    store = Ledger(str(tmp_path / "l.db"), clock=lambda: now[0])
    store.register("cam", ["ftp"], False, [("a", 10, 1.0)])
    record, _ = store.claim("download", "cam", "old", 30)
    assert store.claim("download", "cam", "new", 30) is None
    now[0] += 31
    record, task = store.claim("download", "cam", "new", 30)
    assert not store.checkpoint(record.id, "download", "cam", "old", 5, 30)
    assert store.finish(record.id, "download", "cam", "old", "done") is None
    assert store.checkpoint(record.id, "download", "cam", "new", 5, 30)
    store.close()


def test_restarted_worker_gets_its_own_task_back_with_its_checkpoint(ledger):
    ledger.register("cam", ["ftp"], False, [("a", 10, 1.0), ("b", 10, 1.0)])
    ledger.register("cam", ["ftp"], False, [("c", 10, 1.0)])
    ledger.claim("download", "cam", "node/download/cam", 30)
    second, _ = ledger.claim("download", "cam", "node/download/cam", 30)  # reclaims its own first: same file
    assert second.path == "a"
    ledger.checkpoint(second.id, "download", "cam", "node/download/cam", 7, 30)
    again, task = ledger.claim("download", "cam", "node/download/cam", 30)
    assert again.path == "a" and task.offset == 7


def test_retry_backs_off_and_park_keeps_the_reason(tmp_path):
    now = [0.0]
    store = Ledger(str(tmp_path / "l.db"), retry_base=1.0, retry_cap=8.0, clock=lambda: now[0])
    store.register("cam", ["ftp"], False, [("a", 10, 1.0)])
    delays = []
    for attempt in range(1, 7):
        record, _ = store.claim("download", "cam", "w", 30)
        store.finish(record.id, "download", "cam", "w", "retry", "link lost")
        task = store.get(record.id).task("download")
        assert task.attempts == attempt and task.error == "link lost"
        delays.append(task.not_before - now[0])
        assert store.claim("download", "cam", "w", 30) is None  # backing off
        now[0] = task.not_before
    assert all(0.5 <= d <= 1.0 for d in delays[:1]) and all(d <= 8.0 for d in delays) and max(delays) >= 4.0
    record, _ = store.claim("download", "cam", "w", 30)
    store.finish(record.id, "download", "cam", "w", "park", "refused: 553 bad name")
    parked = store.get(record.id)
    assert parked.state == "failed" and "553 bad name" in parked.error
    assert store.claim("download", "cam", "w", 30) is None
    assert store.retry(record.id).state == "found"
    assert store.claim("download", "cam", "w", 30) is not None
    store.close()


def test_a_lost_reply_is_answered_again(ledger):
    ledger.register("cam", ["ftp"], False, [("a", 10, 1.0)])
    record, _ = ledger.claim("download", "cam", "w", 30)
    first = ledger.finish(record.id, "download", "cam", "w", "done")
    second = ledger.finish(record.id, "download", "cam", "w", "done")
    assert first.state == second.state == "downloaded"


def test_changes_survive_reopening(tmp_path):
    path = str(tmp_path / "l.db")
    store = Ledger(path)
    store.register("cam", ["ftp"], False, [("a", 10, 1.0)])
    record, _ = store.claim("download", "cam", "w", 30)
    store.checkpoint(record.id, "download", "cam", "w", 4, 30)
    store.close()
    reopened = Ledger(path)
    assert reopened.get(record.id).task("download").offset == 4
    reopened.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_database_is_moved_aside_and_rebuilt_from_staging(tmp_path, damage):
    path = tmp_path / "db" / "ledger.db"
    store = Ledger(str(path))
    store.register("cam", ["ftp"], False, [(f"f{i}", 100, 1.0) for i in range(50)])
    store.close()
    original = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path.write_bytes(original[:100] + b"\x00" * 300 + original[400:])
    staged = tmp_path / "staging" / "cam"
    staged.mkdir(parents=True)
    (staged / "7").write_bytes(b"x" * 42)  # a version staged under its id, described beside it
    write_staged_meta(str(staged / "7"), FileRecord(7, "cam", "day1/log.ulg", 42, 123.0, "downloading", version=2),
                      "ab" * 32, "")
    (staged / "8.part").write_bytes(b"x")  # a copy that was never finished: not a version
    (staged / "9").write_bytes(b"y")  # no description: left alone
    config = load_config({"staging_dir": str(tmp_path / "staging"), "database": str(path),
                          "sources": {"cam": {"kind": "folder", "path": str(tmp_path)}},
                          "targets": {"ftp": {"kind": "ftp", "host": "127.0.0.1"}},
                          "pipelines": [{"source": "cam", "targets": ["ftp"]}]})
    store, aside = open_ledger(str(path))
    assert aside is not None and os.path.exists(aside)
    with open(aside, "rb") as handle:
        assert handle.read() != b""  # kept, never deleted
    assert rebuild_from_staging(store, config) == 1
    [record] = store.files()
    assert (record.id, record.path, record.version, record.state) == (7, "day1/log.ulg", 2, "downloaded")
    assert record.sha256 == "ab" * 32
    # the finder listing the same file again changes nothing
    assert store.register("cam", ["ftp"], False, [("day1/log.ulg", 42, 123.0)]) == []
    store.close()


def test_unreadable_database_file_is_an_error_we_recover_from(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_bytes(b"\x00" * 4096)
    store, aside = open_ledger(str(path))
    assert store.files() == [] and aside
    store.close()
    with pytest.raises(sqlite3.DatabaseError):
        bad = tmp_path / "bad.db"
        bad.write_bytes(b"garbage" * 1000)
        Ledger(str(bad))


def test_a_worker_never_acts_on_a_claim_it_does_not_hold(tmp_path):
    """A crossed reply (another worker's claim) must not make a remove worker delete anything."""
    from filesync.engine.transfer import Settings
    from filesync.engine.workers import TaskWorker
    from filesync.ledger.store import Ledger

    store = Ledger(str(tmp_path / "l.db"))
    store.register("cam", ["ftp"], True, [("a", 10, 1.0)])
    other_claim = store.claim("download", "cam", "downloader", 30)

    class CrossedReplies:
        """Answers every claim with the downloader's claim, as a shared connection did."""
        def claim(self, kind, device, worker, lease_seconds):
            record = store.get(other_claim[0].id)
            return record, record.task("remove")

    class Source:
        name = "cam"
        deleted = []

        def delete(self, path):
            self.deleted.append(path)

    worker = TaskWorker("remove", Source(), CrossedReplies(), "remover", Settings(staging_dir=str(tmp_path)))
    assert worker.step() is False
    assert Source.deleted == []
    store.close()
