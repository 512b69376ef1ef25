"""Less ledger and disk work per small file (issue 18, item 3): no checkpoint for a copy under checkpoint_bytes (the
finish records it) while a slow copy still renews its lease."""
import time

from filesync.engine.transfer import Job, Settings
from filesync.ledger.store import Ledger


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
