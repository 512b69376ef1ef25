"""A file is its content, not its name (issue 11): versions, the engine's contract for every target, odd names, and the
ledger that waits instead of moving itself aside. Folder sources and targets here; test/contract/ runs the devices."""
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import assert_config_error
from filesync.config import load_config
from filesync.devices import create_target
from filesync.devices.base import RemoteFile, local_checksum
from filesync.devices.folder import FolderSource, FolderTarget
from filesync.engine import transfer
from filesync.engine.runner import LocalRunner
from filesync.engine.transfer import Job, Settings, SourceChanged
from filesync.ledger.recovery import open_ledger
from filesync.ledger.store import Ledger, LedgerUnavailable
from filesync.paths import conflict_name, safe_name


def folder_config(tmp_path, sources=("inbox",), targets=("out",), delete=False, **extra):
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "checkpoint_bytes": 64 * 1024, "scan_interval": 0.3, "poll_interval": 0.5,
              "retry_base": 0.1, "retry_cap": 0.5, "lease_seconds": 10.0,
              "sources": {name: {"kind": "folder", "path": str(tmp_path / name), "min_age": 0.0} for name in sources},
              "targets": {name: {"kind": "folder", "path": str(tmp_path / name)} for name in targets},
              "pipelines": [{"source": name, "targets": list(targets), "delete_after_upload": delete}
                            for name in sources]}
    for name in list(sources) + list(targets):
        os.makedirs(tmp_path / name, exist_ok=True)
    config.update(extra)
    return config


def wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        time.sleep(0.05)


def settle_after(runner, condition, timeout=30.0):
    """Wait for `condition` (the finder saw a change), then until nothing is left to do."""
    wait_for(condition, timeout, "the change to be registered")
    runner.run_until_settled(timeout=timeout)


def test_a_file_rewritten_with_the_same_size_is_a_new_version_sent_again(tmp_path):
    config = folder_config(tmp_path)
    source = tmp_path / "inbox" / "same.txt"
    source.write_bytes(b"a" * 100)
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=30)
        source.write_bytes(b"b" * 100)
        os.utime(source, (1_763_632_800, 1_763_632_800))  # a time to read the conflict name by
        settle_after(runner, lambda: len(runner.ledger.versions("inbox", "same.txt")) == 2)
        first, second = runner.ledger.versions("inbox", "same.txt")
    finally:
        runner.close()
    assert (first.version, second.version) == (1, 2)
    assert first.state == second.state == "uploaded"
    assert first.sha256 != second.sha256
    out = tmp_path / "out"
    assert (out / "same.txt").read_bytes() == b"a" * 100  # the first version keeps its name: never overwritten
    renamed = out / "same.2025-11-20T10-00-00Z.txt"
    assert renamed.read_bytes() == b"b" * 100
    assert second.task("upload").location == str(renamed)


def test_a_staged_copy_is_never_reused_for_another_version(tmp_path):
    config = folder_config(tmp_path)
    staged = load_config(config).staging_dir
    source = tmp_path / "inbox" / "same.bin"
    source.write_bytes(b"a" * 4096)
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=30)
        source.write_bytes(b"b" * 4096)
        settle_after(runner, lambda: len(runner.ledger.versions("inbox", "same.bin")) == 2)
        first, second = runner.ledger.versions("inbox", "same.bin")
    finally:
        runner.close()
    assert open(os.path.join(staged, "inbox", str(first.id)), "rb").read() == b"a" * 4096
    assert open(os.path.join(staged, "inbox", str(second.id)), "rb").read() == b"b" * 4096
    assert local_checksum(second.task("upload").location, "sha256") == second.sha256


def test_two_logs_with_the_same_name_both_arrive_and_are_removed_only_then(tmp_path):
    config = folder_config(tmp_path, sources=("px4a", "px4b"), delete=True)
    for name, size in (("px4a", 5000), ("px4b", 6000)):
        os.makedirs(tmp_path / name / "sess001")
        (tmp_path / name / "sess001" / "log001.ulg").write_bytes(name.encode() * (size // 4))
    expected = {name: (tmp_path / name / "sess001" / "log001.ulg").read_bytes() for name in ("px4a", "px4b")}
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=30)
        records = runner.ledger.files()
    finally:
        runner.close()
    assert sorted(r.state for r in records) == ["removed", "removed"]
    held = {r.source: open(r.task("upload").location, "rb").read() for r in records}
    assert held == expected
    names = os.listdir(tmp_path / "out" / "sess001")
    assert len(names) == 2 and "log001.ulg" in names
    assert not os.path.exists(tmp_path / "px4a" / "sess001" / "log001.ulg")


def test_a_file_changed_after_its_copy_is_not_removed_and_its_new_version_goes_too(tmp_path):
    config = folder_config(tmp_path, delete=True)
    os.rmdir(tmp_path / "out")  # the target is away: the copy is staged, the upload waits
    source = tmp_path / "inbox" / "growing.log"
    source.write_bytes(b"1" * 50_000)
    runner = LocalRunner(config)
    try:
        runner.start()
        wait_for(lambda: (runner.ledger.find("inbox", "growing.log") or 0) and
                 runner.ledger.find("inbox", "growing.log").state == "downloaded", what="the copy")
        with open(source, "ab") as handle:  # appended to while its upload waits
            handle.write(b"2" * 30_000)
        os.mkdir(tmp_path / "out")
        settle_after(runner, lambda: len(runner.ledger.versions("inbox", "growing.log")) == 2)
        first, second = runner.ledger.versions("inbox", "growing.log")
    finally:
        runner.close()
    assert (first.state, second.state) == ("uploaded", "removed")
    assert first.task("remove").state == "skipped" and "version 2" in first.task("remove").error
    assert open(first.task("upload").location, "rb").read() == b"1" * 50_000
    assert open(second.task("upload").location, "rb").read() == b"1" * 50_000 + b"2" * 30_000
    assert not source.exists()


def _job(tmp_path, ledger, record, kind, device):
    claimed = ledger.claim(kind, device, "w", 30)
    assert claimed and claimed[0].id == record.id
    return Job(ledger, "w", Settings(staging_dir=str(tmp_path / "staging")), claimed[0], claimed[1])


def test_remove_refuses_a_source_that_holds_other_bytes_now(tmp_path):
    """The removal step itself checks the source (for a change the finder has not listed yet)."""
    os.makedirs(tmp_path / "inbox")
    path = tmp_path / "inbox" / "a.bin"
    path.write_bytes(b"x" * 10)
    ledger = Ledger(str(tmp_path / "ledger.db"))
    status = path.stat()
    [record] = ledger.register("inbox", [], True, [("a.bin", 10, status.st_mtime)])
    _job(tmp_path, ledger, record, "download", "inbox")
    ledger.finish(record.id, "download", "inbox", "w", "done")
    source = FolderSource("inbox", {"path": str(tmp_path / "inbox")}, "sources.inbox")
    path.write_bytes(b"y" * 11)
    job = _job(tmp_path, ledger, record, "remove", "inbox")
    with pytest.raises(SourceChanged, match="10 -> 11 bytes"):
        transfer.remove(source, job)
    assert path.read_bytes() == b"y" * 11
    path.write_bytes(b"z" * 10)
    os.utime(path, (status.st_mtime + 5, status.st_mtime + 5))
    with pytest.raises(SourceChanged, match="modified since"):
        transfer.remove(source, job)
    os.utime(path, (status.st_atime, status.st_mtime))
    assert transfer.remove(source, job).location == ""  # the very version: removed
    assert not path.exists()
    assert transfer.remove(source, job).location == ""  # gone already: nothing to do
    ledger.close()


def test_odd_names_never_stop_the_others_and_arrive_under_their_safe_names(tmp_path):
    config = folder_config(tmp_path)
    inbox = os.fsencode(tmp_path / "inbox")
    names = [b"caf\xe9.txt", b"new\nline.txt", b"-dash #1 100%.txt", b"pct%41.txt", b"back\\slash.txt",
             b"x" * 251, b"y" * 255, b"plain.txt"]
    for index, name in enumerate(names):
        with open(os.path.join(inbox, name), "wb") as handle:
            handle.write(bytes([index]) * (1000 + index))
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=30)
        records = runner.ledger.files()
    finally:
        runner.close()
    assert len(records) == len(names) and {r.state for r in records} == {"uploaded"}, \
        [(r.path, r.state, r.error) for r in records]
    out = os.fsencode(tmp_path / "out")
    for index, name in enumerate(names):
        safe = safe_name(os.fsdecode(name)).encode("utf-8")
        with open(os.path.join(out, safe), "rb") as handle:
            assert handle.read() == bytes([index]) * (1000 + index), name
    listed = os.listdir(out)
    assert b"caf%E9.txt" in listed and b"pct%2541.txt" in listed and b"new%0Aline.txt" in listed
    assert all(name.decode("utf-8") for name in listed)  # every name filesync writes is valid UTF-8
    assert not [name for name in listed if name.endswith(b".part")]


def test_a_name_that_cannot_be_carried_is_parked_with_its_reason_and_the_others_go_on(tmp_path):
    config = folder_config(tmp_path)
    (tmp_path / "inbox" / "good.txt").write_bytes(b"g")
    runner = LocalRunner(config)
    finder = next(loop for loop in runner.loops if loop.name == "find:inbox")
    real_list = finder.source.list

    def listing():
        yield RemoteFile("../escape.txt", 3, 1.0)
        yield RemoteFile("unreadable.txt", 0, 0.0, problem="the server lists it but SIZE answers 550")
        yield from real_list()

    finder.source.list = listing
    try:
        runner.run_until_settled(timeout=30)
        states = {r.path: (r.state, r.error) for r in runner.ledger.files()}
    finally:
        runner.close()
    assert states["good.txt"] == ("uploaded", "")
    assert states["../escape.txt"][0] == "failed" and "'..'" in states["../escape.txt"][1]
    assert states["unreadable.txt"] == ("failed", "download inbox: the server lists it but SIZE answers 550")
    assert os.listdir(tmp_path / "out") == ["good.txt"]


def test_a_name_that_cannot_be_carried_is_logged_once_not_at_every_full_rescan(tmp_path, caplog, monkeypatch):
    """A file with a bad name stays on the source: its error is logged once, so the status's last error can clear
    (it came back at each full rescan, every 5 minutes; seen in real rqt)."""
    from filesync.engine.workers import Finder
    monkeypatch.setattr(Finder, "RESCAN_EVERY", 2)
    runner = LocalRunner(folder_config(tmp_path))
    finder = next(loop for loop in runner.loops if loop.name == "find:inbox")
    finder.source.list = lambda: iter([RemoteFile("../escape.txt", 3, 1.0), RemoteFile("good.txt", 1, 1.0)])
    try:
        with caplog.at_level("ERROR", logger="filesync"):
            for _ in range(7):  # three full rescans
                finder.step()
        reports = [r for r in caplog.records if "escape.txt" in r.getMessage()]
        assert len(reports) == 1, [r.getMessage() for r in reports]
        caplog.clear()
        runner.forget(runner.ledger.find("inbox", "../escape.txt").id)  # a person's forget: reported again once
        with caplog.at_level("ERROR", logger="filesync"):
            finder.step()
            finder.step()
        assert len([r for r in caplog.records if "escape.txt" in r.getMessage()]) == 1
    finally:
        runner.close()


def test_a_listing_that_fails_shows_the_source_down_with_the_real_reason(tmp_path):
    runner = LocalRunner(folder_config(tmp_path))
    finder = next(loop for loop in runner.loops if loop.name == "find:inbox")

    def broken():
        raise UnicodeEncodeError("utf-8", "caf\udce9", 3, 4, "surrogates not allowed")

    finder.source.list = broken
    try:
        finder.step()
    finally:
        runner.close()
    assert not finder.link.up and finder.link.fault
    assert finder.link.reason.startswith("listing failed: UnicodeEncodeError") and "surrogates" in finder.link.reason


def test_a_source_that_answers_wrongly_is_an_error_on_the_diagnostics(tmp_path):
    from filesync.status import ERROR, WARN, LinkStatus, Status, diagnose
    links = [LinkStatus("inbox", "source", False, time.time(), "listing failed: UnicodeEncodeError", fault=True),
             LinkStatus("drive", "source", False, time.time(), "drive not plugged in")]
    status = Status(stamp=time.time(), pipelines=[], transfers=[], links=links, rate=0.0, bytes_waiting=0,
                    staging_free_bytes=1, staging_min_free_bytes=0, downloads_held="", ledger_ok=True)
    levels = {d.name: d.level for d in diagnose(status, {}, 30.0)}
    assert levels["source inbox"] == ERROR and levels["source drive"] == WARN


@pytest.mark.parametrize("policy", ["park", "overwrite"])
def test_on_conflict_park_and_overwrite(tmp_path, policy):
    config = folder_config(tmp_path)
    config["targets"]["out"]["on_conflict"] = policy
    (tmp_path / "out" / "a.txt").write_bytes(b"someone else's")
    (tmp_path / "inbox" / "a.txt").write_bytes(b"ours")
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=30)
        [record] = runner.ledger.files()
    finally:
        runner.close()
    if policy == "park":
        assert record.state == "failed" and "already holds a different file" in record.error
        assert (tmp_path / "out" / "a.txt").read_bytes() == b"someone else's"
    else:
        assert record.state == "uploaded"
        assert (tmp_path / "out" / "a.txt").read_bytes() == b"ours"
    assert sorted(os.listdir(tmp_path / "out")) == ["a.txt"]


def test_a_final_name_that_holds_this_version_counts_as_published(tmp_path):
    """A crash between publishing and recording: the next try sends nothing and publishes nothing twice."""
    config = folder_config(tmp_path)
    (tmp_path / "inbox" / "a.txt").write_bytes(b"ours")
    (tmp_path / "out" / "a.txt").write_bytes(b"ours")
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=30)
        [record] = runner.ledger.files()
    finally:
        runner.close()
    assert record.state == "uploaded" and record.task("upload").location == str(tmp_path / "out" / "a.txt")
    assert os.listdir(tmp_path / "out") == ["a.txt"]


def test_a_damaged_published_copy_is_caught_by_the_targets_digest_and_sent_again(tmp_path):
    class Damaging(FolderTarget):
        damaged = 0

        def publish(self, path, size, replace=False):
            location = super().publish(path, size, replace)
            if not Damaging.damaged:
                Damaging.damaged += 1
                with open(location, "r+b") as handle:
                    handle.write(b"!")
            return location

    config = folder_config(tmp_path)
    config["targets"]["out"]["transfers"] = 1  # one upload worker: its target is the one replaced below
    (tmp_path / "inbox" / "a.txt").write_bytes(b"ours" * 100)
    runner = LocalRunner(config)
    worker = next(loop for loop in runner.loops if loop.name == "upload:out")
    worker.device = Damaging("out", {"path": str(tmp_path / "out")}, "targets.out")
    try:
        runner.run_until_settled(timeout=30)
        [record] = runner.ledger.files()
    finally:
        runner.close()
    assert Damaging.damaged == 1
    assert record.state == "uploaded" and record.task("upload").attempts == 1
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"ours" * 100
    assert os.listdir(tmp_path / "out") == ["a.txt"]


def test_forget_finds_the_file_again(tmp_path):
    config = folder_config(tmp_path)
    (tmp_path / "inbox" / "a.txt").write_bytes(b"ours")
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=30)
        [record] = runner.ledger.files()
        assert sorted(os.listdir(tmp_path / "staging" / "inbox")) == [f"{record.id}", f"{record.id}.json"]
        assert runner.forget(record.id)
        settle_after(runner, lambda: runner.ledger.find("inbox", "a.txt") is not None)
        again = runner.ledger.find("inbox", "a.txt")
    finally:
        runner.close()
    assert again.id != record.id and again.state == "uploaded"  # ids are never reused: staging is keyed by them
    assert os.listdir(tmp_path / "out") == ["a.txt"]
    # the forgotten version's staged copy went with it: it would fill staging and come back with a rebuilt ledger
    assert sorted(os.listdir(tmp_path / "staging" / "inbox")) == [f"{again.id}", f"{again.id}.json"]


def test_a_locked_ledger_is_waited_for_never_moved_aside(tmp_path):
    path = str(tmp_path / "ledger.db")
    Ledger(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match="locked"):
            open_ledger(path)
        assert time.monotonic() - started >= 4.0  # SQLite's busy timeout ran out first
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [name for name in os.listdir(tmp_path) if "corrupt" in name] == []
    ledger, aside = open_ledger(path)
    assert aside is None
    ledger.close()


def test_a_ledger_rebuilt_from_staging_sends_nothing_again_to_flight_review(tmp_path):
    """Flight Review cannot be asked what it holds: only staging's note of each done upload keeps a rebuilt ledger
    from posting every kept log again."""
    from support.flight_review_server import FlightReviewServer
    from support.ulog import write_log
    server = FlightReviewServer(tmp_path / "review").start()
    try:
        config = folder_config(tmp_path, targets=("out",))
        config["targets"]["review"] = {"kind": "flight_review", "server": server.url}
        config["pipelines"][0]["targets"].append("review")
        digests = [write_log(str(tmp_path / "inbox" / f"log{i}.ulg"), 20_000 + i, seed=i) for i in range(3)]
        runner = LocalRunner(config)
        try:
            runner.run_until_settled(timeout=60)
            before = {r.path: r.task("upload", "review").location for r in runner.ledger.files()}
        finally:
            runner.close()
        assert sorted(u.sha256 for u in server.uploads) == sorted(digests)
        with open(config["database"], "wb") as database:
            database.write(b"not a database at all" * 200)
        runner = LocalRunner(config)
        try:
            runner.run_until_settled(timeout=60)
            after = {r.path: (r.state, r.task("upload", "review").location) for r in runner.ledger.files()}
        finally:
            runner.close()
    finally:
        server.stop()
    assert len(server.uploads) == 3  # not one posted again
    assert after == {path: ("uploaded", location) for path, location in before.items()}


def _mount_tmpfs(where, size):
    os.makedirs(where, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if result.returncode:
        pytest.skip(f"cannot mount tmpfs here: {result.stderr.decode().strip()}")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_ledger_on_a_full_or_read_only_disk_is_not_taken_for_corrupt(tmp_path):
    where = tmp_path / "small"
    _mount_tmpfs(where, "600k")
    try:
        path = str(where / "ledger.db")
        ledger = Ledger(path)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for batch in range(1000):
                ledger.register("inbox", ["out"], False, [(f"{batch}/{i}-" + "n" * 200, i, 1.0) for i in range(100)])
        known = len(ledger.files())
        ledger.close()
        again, aside = open_ledger(path)  # full, not damaged: opened as it is
        assert aside is None and len(again.files()) == known > 0
        again.close()
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        with pytest.raises(LedgerUnavailable):
            open_ledger(path)
        assert not [name for name in os.listdir(where) if "corrupt" in name]
    finally:
        subprocess.run(["umount", "-l", str(where)])


def test_delete_after_upload_on_a_source_that_cannot_delete_is_a_config_error(tmp_path):
    config = folder_config(tmp_path, delete=True)
    config["sources"]["inbox"] = {"kind": "http", "url": "http://127.0.0.1:1/manifest.json"}
    assert_config_error(lambda: load_config(config), "pipelines[0].delete_after_upload", "cannot delete")
    config["sources"]["inbox"] = {"kind": "drive", "label": "CAM", "mount": True}
    assert_config_error(lambda: load_config(config), "pipelines[0].delete_after_upload", "cannot delete")


def test_a_secret_of_the_wrong_type_is_never_echoed():
    message = assert_config_error(
        lambda: create_target("nas", {"kind": "ftp", "host": "127.0.0.1", "password": 20240501}),
        "targets.nas.password")
    assert "20240501" not in message


def test_conflict_names_keep_the_extension_and_stay_within_255_bytes():
    assert conflict_name("sess001/log001.ulg", 1_763_632_800, 9) == "sess001/log001.2025-11-20T10-00-00Z.ulg"
    assert conflict_name("a", -1, 9, 2) == "a.v9-2"
    long = conflict_name("d/" + "é" * 126 + ".ulg", 0, 1)
    assert len(long.split("/")[1].encode()) <= 255 and long.endswith("Z.ulg")


def test_on_conflict_is_refused_where_a_target_has_no_final_name():
    assert_config_error(lambda: create_target("web", {"kind": "http", "url": "http://127.0.0.1:1/{path}",
                                                      "on_conflict": "park"}), "targets.web.on_conflict")


def test_the_status_says_which_version_moves_and_which_is_parked():
    from filesync.status import ParkedFile, Status, TransferStatus, status_view
    status = Status(stamp=time.time(), pipelines=[], links=[],
                    transfers=[TransferStatus(5, "inbox", "a.txt", "upload", "out", 10, 20, version=2),
                               TransferStatus(7, "inbox", "c.txt", "upload", "out", 10, 20)],
                    parked=[ParkedFile(6, "inbox", "b.txt", 3, "upload out: refused", ["target out"], version=3)])
    view = status_view(status)
    assert [t["path"] for t in view["transfers"]] == ["a.txt [version 2]", "c.txt"]
    assert view["parked"][0]["path"] == "b.txt [version 3]"


LEDGER_FULL = r"""
import sqlite3, sys
import rospy
rospy.rostime.set_rostime_initialized(True)  # the node's handlers log with rospy; no master is needed for that
from filesync.ledger.store import Ledger
from filesync.msg import FoundFile
from filesync.ros.ledger_node import LedgerServices
from filesync.srv import CountsRequest, RegisterRequest
services = LedgerServices(Ledger(sys.argv[1]), "")
try:
    for batch in range(1000):
        services.register(RegisterRequest("inbox", ["out"], False, [
            FoundFile(path=f"{batch}/{i}-" + "n" * 200, size=i, mtime=1.0) for i in range(100)]))
except sqlite3.OperationalError:
    pass
print(services.counts(CountsRequest()).ledger_error)
services.close()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_ledger_that_cannot_be_written_says_why_on_the_status(tmp_path):
    import sys
    from support.launch import NEEDS_ROS_WORKSPACE, ros_workspace_sourced
    if not ros_workspace_sourced():
        pytest.skip(NEEDS_ROS_WORKSPACE)
    where = tmp_path / "small"
    _mount_tmpfs(where, "400k")
    try:  # a subprocess: pytest's src/ path would hide the generated messages
        result = subprocess.run([sys.executable, "-c", LEDGER_FULL, str(where / "ledger.db")], capture_output=True,
                                text=True, timeout=120, cwd=str(tmp_path))
    finally:
        subprocess.run(["umount", "-l", str(where)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"the ledger {where}/ledger.db cannot be written: database or disk is full"


def test_a_file_rewritten_in_place_during_its_copy_is_copied_again_never_staged_mixed(tmp_path):
    """A same-size rewrite in the middle of the staging copy: the copy must not pass for either version."""
    import threading
    from filesync.errors import TransientError
    os.makedirs(tmp_path / "inbox")
    path = tmp_path / "inbox" / "a.bin"
    path.write_bytes(b"A" * (2 << 20))
    source = FolderSource("inbox", {"path": str(tmp_path / "inbox")}, "sources.inbox")
    ledger = Ledger(str(tmp_path / "ledger.db"))
    [record] = ledger.register("inbox", ["out"], False, [("a.bin", 2 << 20, path.stat().st_mtime)])
    record, task = ledger.claim("download", "inbox", "w", 30)
    settings = Settings(staging_dir=str(tmp_path / "staging"), bwlimit=2 << 20, checkpoint_bytes=256 << 10)

    def rewrite():
        time.sleep(0.4)
        with open(path, "r+b") as handle:
            handle.write(b"B" * (2 << 20))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        with pytest.raises(TransientError, match="changed on the source during the copy"):
            transfer.download(source, Job(ledger, "w", settings, record, task))
    finally:
        writer.join()
    assert ledger.get(record.id).task("download").offset == 0  # the next try starts over
    assert not os.path.exists(os.path.join(settings.staging_dir, "inbox", str(record.id)))
    ledger.close()


def test_an_interrupted_upload_is_resumed_only_by_its_own_version(tmp_path):
    """Version 1's upload was cut; version 2 of the same name (same size) goes first: it must not resume version 1's
    temporary file (pyftpdlib offers no digest, so a mixed copy would pass the size check)."""
    from filesync.devices import create_target
    from filesync.paths import part_name
    from support.ftp_server import FtpServerProcess
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log")).start()
    os.makedirs(tmp_path / "inbox")
    path = tmp_path / "inbox" / "a.bin"
    source = FolderSource("inbox", {"path": str(tmp_path / "inbox")}, "sources.inbox")
    target = create_target("out", server.target_options("/keep"))
    ledger = Ledger(str(tmp_path / "ledger.db"))
    settings = Settings(staging_dir=str(tmp_path / "staging"))
    try:
        versions = []
        for fill, mtime in ((b"A", 1_700_000_000), (b"B", 1_763_632_800)):
            path.write_bytes(fill * 600_000)
            os.utime(path, (mtime, mtime))
            [record] = ledger.register("inbox", ["out"], False, [("a.bin", 600_000, float(mtime))])
            record, task = ledger.claim("download", "inbox", "w", 30)
            done = transfer.download(source, Job(ledger, "w", settings, record, task))
            ledger.finish(record.id, "download", "inbox", "w", "done", sha256=done.sha256)
            versions.append(record)
        first, second = versions
        keep = os.path.join(server.root, "keep")
        os.makedirs(keep)
        target.set_context(version_id=first.id)
        leftover = os.path.join(keep, target.part_name("a.bin"))
        with open(leftover, "wb") as handle:
            handle.write(b"A" * 300_000)  # what a cut upload of version 1 left
        record, task = ledger.claim("upload", "out", "w", 30)
        assert record.id == first.id
        ledger.finish(record.id, "upload", "out", "w", "release")
        ledger.claim("upload", "out", "other", 30)  # version 1 is held elsewhere: version 2 goes first
        record, task = ledger.claim("upload", "out", "w", 30)
        assert record.id == second.id
        transfer.upload(target, Job(ledger, "w", settings, record, task))
        with open(os.path.join(keep, "a.bin"), "rb") as handle:
            assert handle.read() == b"B" * 600_000
        assert os.path.getsize(leftover) == 300_000  # still version 1's
        assert os.path.basename(leftover) == part_name("a.bin", first.id)
    finally:
        target.close()
        ledger.close()
        server.stop()


def test_an_upload_that_is_parked_leaves_nothing_half_sent(tmp_path):
    """A permanent refusal in the middle of an upload: what the target held of it is dropped (an S3 multipart
    upload left behind is kept, and billed, by the store)."""
    from filesync.errors import PermanentError

    class Refusing(FolderTarget):
        def publish(self, path, size, replace=False):
            raise PermanentError("the server refuses this file")

    config = folder_config(tmp_path)
    config["targets"]["out"]["transfers"] = 1  # one upload worker: its target is the one replaced below
    (tmp_path / "inbox" / "a.txt").write_bytes(b"ours" * 1000)
    runner = LocalRunner(config)
    worker = next(loop for loop in runner.loops if loop.name == "upload:out")
    worker.device = Refusing("out", {"path": str(tmp_path / "out")}, "targets.out")
    try:
        runner.run_until_settled(timeout=30)
        [record] = runner.ledger.files()
    finally:
        runner.close()
    assert record.state == "failed" and "refuses this file" in record.error
    assert os.listdir(tmp_path / "out") == []
