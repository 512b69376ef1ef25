"""Less ledger and disk work per small file (issue 18, item 3): no checkpoint for a copy under checkpoint_bytes (the
finish records it) while a slow copy still renews its lease, and no delivery note beside a staged version for a
target that can be asked what it holds (a ledger rebuilt from staging asks it instead)."""
import os
import time

from filesync.engine.runner import LocalRunner
from filesync.engine.transfer import Job, Settings
from filesync.ledger.recovery import read_staged_meta
from filesync.ledger.store import Ledger
from filesync.paths import staged_path
from support.http_sink import SinkServer
from test_content import folder_config


def _write_whole(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as handle:
        handle.write(data)
    os.replace(path + ".tmp", path)


def test_a_small_files_copies_record_no_checkpoint_and_a_slow_copy_still_renews_its_lease(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        ledger.register("inbox", ["out"], False, [("a.bin", 1000, 1.0)])
        record, task = ledger.claim("download", "inbox", "w", 0.4)
        job = Job(ledger, "w", Settings(staging_dir=str(tmp_path), lease_seconds=0.4), record, task)
        job.checkpoint_before_finish(1000)  # quick and small: the finish records it
        assert ledger.get(record.id).task("download").offset == 0
        assert not job.due(500)
        time.sleep(0.25)  # over half the lease without a checkpoint
        assert job.due(500), "a slow small copy must checkpoint before its lease runs out"
        job.checkpoint_before_finish(1000)
        assert ledger.get(record.id).task("download").offset == 1000
    finally:
        ledger.close()


def _deliver_then_rebuild(config, tmp_path):
    """Deliver inbox/a.bin, lose the ledger, rebuild it from staging and run again; return the staged description
    written by the first run."""
    _write_whole(str(tmp_path / "inbox" / "a.bin"), b"a" * 20_000)
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=60)
        [record] = runner.ledger.files()
        assert record.state == "uploaded"
    finally:
        runner.close()
    meta = read_staged_meta(staged_path(config["staging_dir"], "inbox", record.id))
    with open(config["database"], "wb") as handle:  # the ledger is lost: rebuilt from staging
        handle.write(b"this is not a database" * 200)
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=60)
        [rebuilt] = runner.ledger.files()
        assert (rebuilt.id, rebuilt.state, rebuilt.task("upload").location) == (
            record.id, "uploaded", record.task("upload").location)
    finally:
        runner.close()
    return meta


def test_a_task_that_waited_in_its_batch_counts_its_lease_from_the_claim(tmp_path):
    # A batch's tasks share the claim's lease; one started late must renew it by half the lease after the claim, not
    # half a lease after its own start (by then another worker may have taken it).
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        ledger.register("inbox", ["out"], False, [("a.bin", 1000, 1.0)])
        [(record, task)] = ledger.claim_batch("download", "inbox", "w", 10.0, 8, 1 << 20)
        job = Job(ledger, "w", Settings(staging_dir=str(tmp_path), lease_seconds=10.0), record, task,
                  claimed_at=time.monotonic() - 6.0)
        job.checkpoint_before_finish(1000)  # small, but 6 of its 10 s of lease are gone: renewed
        assert ledger.get(record.id).task("download").offset == 1000
    finally:
        ledger.close()


def test_no_delivery_note_for_a_target_that_can_be_asked_and_a_rebuilt_ledger_asks_it(tmp_path):
    meta = _deliver_then_rebuild(folder_config(tmp_path), tmp_path)
    assert meta is not None and "delivered" not in meta, meta
    assert sorted(os.listdir(tmp_path / "out")) == ["a.bin"], "the rebuilt ledger sent the version again"


def test_a_target_that_cannot_be_asked_keeps_its_delivery_note_and_is_not_posted_again(tmp_path):
    sink = SinkServer(tmp_path / "sink")
    try:
        config = folder_config(tmp_path, targets=())
        config["targets"] = {"web": {"kind": "http", "url": sink.url + "/files/{path}"}}
        config["pipelines"][0]["targets"] = ["web"]
        meta = _deliver_then_rebuild(config, tmp_path)
        assert meta["delivered"] == {"web": sink.url + "/files/a.bin"}, meta
        assert len(sink.requests) == 1, "the rebuilt ledger posted the version again"
    finally:
        sink.stop()
