"""LocalRunner's wake-ups: a state change wakes the task workers, never the finder (which would list the source again)."""
import os

from conftest import write_file
from filesync.engine.runner import LocalRunner
from filesync.engine.workers import Finder


def test_files_move_on_wakeups_alone_and_the_source_is_listed_once(tmp_path):
    # Timers far beyond the test: every step after the first scan happens because a state change woke a worker.
    # Before the fix each announced change also woke the finder, which listed the folder again: about 4 listings
    # per file (O(N^2) listing work for N files). Now the folder is listed once, however many files go through.
    count = 60
    for index in range(count):
        write_file(str(tmp_path / "inbox" / f"f{index:03d}.bin"), 1000 + index, seed=index)
    os.makedirs(tmp_path / "out")
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "scan_interval": 3600.0, "poll_interval": 3600.0,
              "sources": {"inbox": {"kind": "folder", "path": str(tmp_path / "inbox"), "min_age": 0.0}},
              "targets": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
              "pipelines": [{"source": "inbox", "targets": ["out"]}]}
    runner = LocalRunner(config)
    [finder] = [loop for loop in runner.loops if isinstance(loop, Finder)]
    listings = []
    original_list = finder.source.list

    def counted_list():
        listings.append(1)
        return original_list()
    finder.source.list = counted_list
    try:
        runner.run_until_settled(timeout=60)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
        assert len(runner.ledger.files()) == count
    finally:
        runner.close()
    assert len(os.listdir(tmp_path / "out")) == count
    assert len(listings) == 1, f"the source was listed {len(listings)} times for {count} files"


def test_a_step_that_starts_wakes_no_worker_and_one_that_ends_wakes_them_all(tmp_path):
    # A start leaves nothing new to claim: each worker woken for it claimed in vain (a ledger transaction each; with
    # 4 + 4 workers, 8 claims a step). A finished step may be the next step's work (a download's upload).
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "sources": {"inbox": {"kind": "folder", "path": str(tmp_path / "inbox"), "min_age": 0.0}},
              "targets": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
              "pipelines": [{"source": "inbox", "targets": ["out"]}]}
    os.makedirs(tmp_path / "inbox")
    write_file(str(tmp_path / "inbox" / "a.bin"), 1000)
    runner = LocalRunner(config)
    try:
        [record] = runner.ledger.register("inbox", ["out"], False, [("a.bin", 1000, 1.0)])
        workers = [loop for loop in runner.loops if not isinstance(loop, Finder)]
        assert len(workers) == 8
        runner._announce(record, record.task("download"), 0)
        assert not any(worker.wake.is_set() for worker in workers)
        runner._announce(record, record.task("download"), None)
        assert all(worker.wake.is_set() for worker in workers)
    finally:
        runner.close()
