"""The whole folder -> staging -> FTP pipeline in one process and under kill -9, against a real pyftpdlib server."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import write_file
from filesync.engine.runner import LocalRunner
from support.ftp_server import FtpServerProcess
from filesync.devices.base import local_checksum

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20



def make_config(tmp_path, server, **extra):
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "checkpoint_bytes": 256 * 1024, "scan_interval": 0.5, "poll_interval": 1.0,
              "retry_base": 0.2, "retry_cap": 2.0, "lease_seconds": 10.0,
              "sources": {"inbox": {"kind": "folder", "path": str(tmp_path / "inbox"), "min_age": 0.0}},
              "targets": {"ftp": server.target_options("/incoming")},
              "pipelines": [{"source": "inbox", "targets": ["ftp"]}]}
    config.update(extra)
    return config


def assert_arrived(tmp_path, server, expected_paths):
    inbox = tmp_path / "inbox"
    for path in expected_paths:
        stored = os.path.join(server.root, "incoming", path)
        assert os.path.exists(stored), path
        assert local_checksum(stored, "sha256") == local_checksum(inbox / path, "sha256"), path
    publications = Counter(e["path"] for e in server.events("RNTO"))
    assert all(publications[os.path.join("incoming", p)] == 1 for p in expected_paths), publications
    assert not [name for _, _, names in os.walk(server.root) for name in names if name.endswith(".part")]


def test_fifty_files_arrive_identical_and_once(tmp_path, ftp_server):
    sizes = [0, 1, 2, 239, 4095, 4096, 4097, 65535, 65536, 65537] + [random.Random(i).randrange(1, 2 * MiB)
                                                                     for i in range(37)] + [10 * MiB, 30 * MiB, 50 * MiB]
    paths = [f"day{i % 4}/sub{i % 3}/file{i:02d}.bin" for i in range(len(sizes))]
    for path, size in zip(paths, sizes):
        write_file(str(tmp_path / "inbox" / path), size)
    runner = LocalRunner(make_config(tmp_path, ftp_server))
    try:
        runner.run_until_settled(timeout=300)
        records = runner.ledger.files()
        assert len(records) == 50 and {r.state for r in records} == {"uploaded"}
        assert all(r.task("upload").location.startswith(f"ftp://127.0.0.1:{ftp_server.port}/incoming/")
                   for r in records)
    finally:
        runner.close()
    assert_arrived(tmp_path, ftp_server, paths)
    assert sum(e["received"] for e in ftp_server.events("STOR")) == sum(sizes)  # nothing sent twice


def test_delete_after_upload_removes_the_source_only_when_verified(tmp_path, ftp_server):
    for i in range(3):
        write_file(str(tmp_path / "inbox" / f"f{i}.bin"), 100_000 * i)
    config = make_config(tmp_path, ftp_server)
    config["pipelines"][0]["delete_after_upload"] = True
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=120)
        assert {r.state for r in runner.ledger.files()} == {"removed"}
    finally:
        runner.close()
    assert os.listdir(tmp_path / "inbox") == []
    assert sorted(os.listdir(os.path.join(ftp_server.root, "incoming"))) == ["f0.bin", "f1.bin", "f2.bin"]
    for name in os.listdir(tmp_path / "db"):  # the ledger (and its WAL) never holds the password
        with open(tmp_path / "db" / name, "rb") as stored:
            assert ftp_server.password.encode() not in stored.read(), name


def test_odd_names_travel_under_their_safe_names_and_the_rest_moves(tmp_path, ftp_server):
    write_file(str(tmp_path / "inbox" / "good.bin"), 10)
    write_file(str(tmp_path / "inbox" / "bad\nname.bin"), 10)
    runner = LocalRunner(make_config(tmp_path, ftp_server))
    try:
        runner.run_until_settled(timeout=60)
        assert sorted((r.path, r.state) for r in runner.ledger.files()) == [
            ("bad%0Aname.bin", "uploaded"), ("good.bin", "uploaded")]
    finally:
        runner.close()
    with open(os.path.join(ftp_server.root, "incoming", "bad%0Aname.bin"), "rb") as handle:
        assert handle.read() == open(tmp_path / "inbox" / "bad\nname.bin", "rb").read()


def test_server_stopped_mid_upload_resumes_from_its_offset(tmp_path):
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log"), bandwidth=2 * MiB).start()
    write_file(str(tmp_path / "inbox" / "big.bin"), 12 * MiB)
    runner = LocalRunner(make_config(tmp_path, server))
    try:
        runner.start()
        part = os.path.join(server.root, "incoming", "big.bin.v1.part")  # the temporary name of version 1
        deadline = time.monotonic() + 60
        while not (os.path.exists(part) and os.path.getsize(part) > 3 * MiB):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.stop()
        time.sleep(3)
        record = runner.ledger.files()[0]
        assert record.state != "failed"
        server.start()
        runner.run_until_settled(timeout=120)
    finally:
        runner.close()
        server.stop()
    assert_arrived(tmp_path, server, ["big.bin"])
    # the killed server logged nothing of its interrupted STOR; the restarted one shows where the upload went on
    resumed = server.events("STOR")[-1]
    assert resumed["offset"] > 3 * MiB and resumed["received"] == 12 * MiB - resumed["offset"]


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@needs_root
@pytest.mark.parametrize("full_side", ["target", "staging"])
def test_full_disk_waits_and_resumes(tmp_path, full_side):
    ftp_root = tmp_path / "ftp_root"
    staging = tmp_path / "staging"
    small = ftp_root if full_side == "target" else staging
    mount_tmpfs(small, "4m")
    server = None
    try:
        server = FtpServerProcess(str(ftp_root), str(tmp_path / "ftp.log")).start()
        write_file(str(tmp_path / "inbox" / "big.bin"), 6 * MiB)
        runner = LocalRunner(make_config(tmp_path, server))
        try:
            runner.start()
            deadline = time.monotonic() + 60
            while True:
                record = runner.ledger.files()[0] if runner.ledger.files() else None
                task = record and record.task("upload" if full_side == "target" else "download")
                if task and task.attempts >= 2:
                    break
                assert time.monotonic() < deadline, record
                time.sleep(0.1)
            assert record.state not in ("uploaded", "failed")
            assert ("426" if full_side == "target" else "staging disk full") in task.error
            subprocess.run(["mount", "-o", "remount,size=32m", str(small)], check=True)
            runner.run_until_settled(timeout=120)
            assert runner.ledger.files()[0].state == "uploaded"
        finally:
            runner.close()
        assert_arrived(tmp_path, server, ["big.bin"])
        if full_side == "target":
            assert server.events("STOR")[-1]["offset"] > 0  # the partial upload was kept and resumed
    finally:
        if server:
            server.stop()
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_kill_9_at_random_points_loses_nothing_and_resends_little(tmp_path):
    """The whole engine (ledger, downloader, uploader in one process) killed again and again mid-transfer."""
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log")).start()
    rng = random.Random(int(os.environ.get("FILESYNC_TEST_SEED", "7")))
    sizes = [rng.randrange(0, 6 * MiB) for _ in range(16)] + [0, 1, 20 * MiB]
    paths = [f"d{i % 3}/f{i}.bin" for i in range(len(sizes))]
    for path, size in zip(paths, sizes):
        write_file(str(tmp_path / "inbox" / path), size)
    config = make_config(tmp_path, server, lease_seconds=5.0, bwlimit=6 * MiB)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    command = [sys.executable, os.path.join(HERE, "support", "run_local.py"), str(config_path)]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(HERE, "..", "src"), HERE]))
    kills = 0
    try:
        for _ in range(12):
            process = subprocess.Popen(command, env=environment)
            time.sleep(rng.uniform(0.3, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        subprocess.run(command + ["--until-settled"], env=environment, check=True, timeout=600)
    finally:
        server.stop()
    assert_arrived(tmp_path, server, paths)
    stors = server.events("STOR")
    resent = sum(e["received"] for e in stors) - sum(sizes)
    assert 0 <= resent <= kills * config["checkpoint_bytes"], (resent, kills)
