"""The staging disk floor on a real, nearly full file system (a small tmpfs): downloads wait and the status says why,
uploads go on, nothing is lost, and downloads go on once space is freed (by retention, or by a bigger disk)."""
import os
import subprocess
import time

import pytest

from conftest import write_file
from filesync.devices.base import local_checksum
from filesync.engine.runner import LocalRunner
from filesync.engine.transfer import staging_free_bytes
from filesync.status import ERROR, StatusBuilder, diagnose, worker_report
from support.ftp_server import FtpServerProcess

MiB = 1 << 20
FLOOR = 4 * MiB
CHECKPOINT = 256 * 1024

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_staging(tmp_path):
    """A 12 MiB tmpfs as the staging directory, unmounted even when the test fails."""
    staging = tmp_path / "staging"
    staging.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(staging)], check=True, timeout=30)
    try:
        yield staging
    finally:
        subprocess.run(["umount", "-l", str(staging)], check=False, timeout=30)


@pytest.fixture
def slow_server(tmp_path):
    """A real FTP server taking uploads at 2 MiB/s, so staging fills faster than uploads empty it."""
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log"), bandwidth=2 * MiB).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("freed_by", ["retention", "bigger_disk"])
def test_downloads_wait_above_the_floor_and_go_on(tmp_path, small_staging, slow_server, freed_by):
    paths = [f"flight{i}.ulg" for i in range(6)]  # 18 MiB through a 12 MiB staging disk
    for path in paths:
        write_file(str(tmp_path / "inbox" / path), 3 * MiB)
    runner = LocalRunner({
        "staging_dir": str(small_staging), "database": str(tmp_path / "db" / "ledger.db"),
        "checkpoint_bytes": CHECKPOINT, "scan_interval": 0.5, "poll_interval": 0.5, "retry_base": 0.2,
        "retry_cap": 1.0, "staging_min_free_bytes": FLOOR,
        "retention": "uploaded" if freed_by == "retention" else "keep",
        "sources": {"inbox": {"kind": "folder", "path": str(tmp_path / "inbox"), "min_age": 0.0}},
        "targets": {"ftp": slow_server.target_options("/in")},
        "pipelines": [{"source": "inbox", "targets": ["ftp"]}]})
    builder = StatusBuilder(runner.config)
    held_status, uploaded_while_held, lowest_free = None, set(), None
    if freed_by == "retention":
        # the target is away at first, so staging surely fills and downloads surely wait (with retention, one
        # finished upload frees room at once, which a poll could miss); it comes back once they wait
        slow_server.stop()
    try:
        runner.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            free = staging_free_bytes(str(small_staging))
            lowest_free = free if lowest_free is None else min(lowest_free, free)
            report = worker_report("local", runner.loops)
            records = runner.ledger.files()
            if report.downloads_held:
                held_status = builder.build(runner.ledger.counts(), [report], free)
                uploaded_while_held |= {r.path for r in records if r.state == "uploaded"}
            if freed_by == "bigger_disk" and held_status and len(uploaded_while_held) >= 2:
                break
            if freed_by == "retention" and held_status and slow_server.process is None:
                slow_server.start()
            if freed_by == "retention" and len(records) == 6 and all(r.state == "uploaded" for r in records):
                break
            time.sleep(0.1)
        assert held_status is not None, "downloads never waited"
        assert "downloads wait: staging has" in held_status.downloads_held
        assert "under the floor of 4194304" in held_status.downloads_held
        staging = next(d for d in diagnose(held_status, {}, 30.0) if d.name == "staging")
        assert staging.level == ERROR and "downloads wait" in staging.message
        if freed_by == "bigger_disk":
            assert uploaded_while_held, "uploads did not go on while downloads waited"
        # the floor is checked at every checkpoint: free space never fell more than one interval under it
        assert lowest_free >= FLOOR - CHECKPOINT - 64 * 1024, lowest_free
        if freed_by == "bigger_disk":
            assert any(r.state == "found" for r in runner.ledger.files())  # still waiting for room
            subprocess.run(["mount", "-o", "remount,size=64m", str(small_staging)], check=True, timeout=30)
        runner.run_until_settled(timeout=120)
        records = runner.ledger.files()
        assert [r.state for r in records] == ["uploaded"] * 6, [(r.path, r.state, r.error) for r in records]
        assert all(r.task("download").attempts == 0 for r in records)  # waiting for space is no failed attempt
        assert worker_report("local", runner.loops).downloads_held == ""
    finally:
        runner.close()
    for path in paths:
        stored = os.path.join(slow_server.root, "in", path)
        assert local_checksum(stored, "sha256") == local_checksum(str(tmp_path / "inbox" / path), "sha256")
    staged = [name for _, _, names in os.walk(small_staging) for name in names]
    # staged under their version ids, each with its description; retention removed what the target holds
    expected_staged = [] if freed_by == "retention" else sorted(
        name for record in records for name in (str(record.id), f"{record.id}.json"))
    assert sorted(staged) == expected_staged
