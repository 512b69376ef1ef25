"""The FTP target against real servers (pyftpdlib; ProFTPD with mod_digest where digests and restart refusals matter):
temporary names, resume, publish without replacing, digests, errors. test/contract checks the Target contract."""
import ftplib
import io
import os

import pytest

from conftest import write_file
from filesync.devices import create_target
from filesync.devices.base import local_digest
from filesync.engine.runner import LocalRunner
from filesync.errors import AuthRefused, DeviceUnavailable, FinalNameTaken, PermanentError, StartOver
from support.ftp_servers import Proftpd


def target_for(server, **extra):
    options = server.target_options("/up")
    options.update(extra)
    return create_target("ftp", options)


def test_upload_lands_under_part_then_renames(ftp_server, tmp_path):
    local = tmp_path / "a.bin"
    write_file(str(local), 300_000)
    target = target_for(ftp_server)
    seen = []
    with open(local, "rb") as stream:
        target.write("d/e/a.bin", stream, 0, 300_000, seen.append)
    assert os.path.getsize(os.path.join(ftp_server.root, "up/d/e/a.bin.part")) == 300_000
    assert not os.path.exists(os.path.join(ftp_server.root, "up/d/e/a.bin"))
    assert seen[-1] == 300_000
    location = target.publish("d/e/a.bin", 300_000)
    assert location == f"ftp://127.0.0.1:{ftp_server.port}/up/d/e/a.bin"
    with open(os.path.join(ftp_server.root, "up/d/e/a.bin"), "rb") as stored:
        assert stored.read() == local.read_bytes()
    target.close()


def test_resume_sends_only_the_rest(ftp_server, tmp_path):
    local = tmp_path / "a.bin"
    write_file(str(local), 500_000)
    data = local.read_bytes()
    os.makedirs(os.path.join(ftp_server.root, "up"), exist_ok=True)
    with open(os.path.join(ftp_server.root, "up/a.bin.part"), "wb") as partial:
        partial.write(data[:123_456])
    target = target_for(ftp_server)
    assert target.held("a.bin") == 123_456
    with open(local, "rb") as stream:
        stream.seek(123_456)
        target.write("a.bin", stream, 123_456, 500_000, lambda done: None)
    target.publish("a.bin", 500_000)
    [stor] = ftp_server.events("STOR")
    assert stor["offset"] == 123_456 and stor["received"] == 500_000 - 123_456
    with open(os.path.join(ftp_server.root, "up/a.bin"), "rb") as stored:
        assert stored.read() == data
    target.close()


def test_the_target_tells_what_a_final_name_holds_and_never_publishes_over_it(ftp_server, tmp_path):
    """Was: published() counted a final name with the same bytes as done and refused other bytes. The engine decides
    that now, from what the target tells: stat() (SIZE) and read() (RETR, as pyftpdlib computes no digest)."""
    local = tmp_path / "a.bin"
    write_file(str(local), 70_000)
    os.makedirs(os.path.join(ftp_server.root, "up"), exist_ok=True)
    with open(os.path.join(ftp_server.root, "up/a.bin"), "wb") as final:
        final.write(local.read_bytes())
    target = target_for(ftp_server)
    assert target.digests == () and target.readable
    assert target.stat("a.bin") == 70_000 and target.stat("missing.bin") is None
    assert b"".join(target.read("a.bin")) == local.read_bytes()
    with open(os.path.join(ftp_server.root, "up/a.bin"), "r+b") as final:
        final.write(b"X")  # same size, other bytes: somebody else's file
    assert target.stat("a.bin") == 70_000
    assert b"".join(target.read("a.bin")) != local.read_bytes()
    with open(local, "rb") as stream:
        target.write("a.bin", stream, 0, 70_000, lambda done: None)
    with pytest.raises(FinalNameTaken):
        target.publish("a.bin", 70_000)
    with open(os.path.join(ftp_server.root, "up/a.bin"), "rb") as final:
        assert final.read(1) == b"X"
    assert ftp_server.events("RNTO") == []
    target.close()


def test_wrong_password_and_absent_server_mean_unavailable(ftp_server, tmp_path):
    target = target_for(ftp_server, password="wrong-Pa55word")
    with pytest.raises(AuthRefused, match="530") as refused:  # a DeviceUnavailable: the engine waits for a fix
        target.probe()
    assert "wrong-Pa55word" not in str(refused.value) and "\n" not in str(refused.value)
    ftp_server.stop()
    with pytest.raises(DeviceUnavailable):
        target_for(ftp_server).held("a.bin")


def test_password_from_environment_and_file(ftp_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_FTP_PASSWORD", ftp_server.password)
    target_for(ftp_server, password="", password_env="TEST_FTP_PASSWORD").probe()
    secret = tmp_path / "secret"
    secret.write_text(ftp_server.password + "\n")
    target_for(ftp_server, password="", password_file=str(secret)).probe()
    from filesync.errors import ConfigError
    with pytest.raises(ConfigError, match="targets.ftp.password_env: environment variable NOT_SET_ANYWHERE"):
        target_for(ftp_server, password="", password_env="NOT_SET_ANYWHERE").probe()


def test_refused_name_is_permanent(ftp_server):
    target = target_for(ftp_server)
    os.makedirs(os.path.join(ftp_server.root, "up"), exist_ok=True)
    open(os.path.join(ftp_server.root, "up", "blocker"), "w").close()
    with pytest.raises(PermanentError):  # a directory cannot be made where a file is
        target.write("blocker/a.bin", io.BytesIO(b"abc"), 0, 3, lambda done: None)
    target.close()


def test_size_after_a_listing_still_sees_the_file(ftp_server, tmp_path):
    """ftplib leaves the connection in ASCII after LIST; SIZE there is refused and must not read as 'missing'."""
    target = target_for(ftp_server)
    os.makedirs(os.path.join(ftp_server.root, "up"), exist_ok=True)
    with open(os.path.join(ftp_server.root, "up", "a.bin.part"), "wb") as partial:
        partial.write(b"x" * 10)
    with target.connection.session("LIST") as ftp:
        ftp.retrlines("LIST /up", lambda line: None)
    assert target.held("a.bin") == 10
    target.close()


def test_location_is_a_url(ftp_server):
    target = target_for(ftp_server)
    assert target.location("a b/#1%.bin") == f"ftp://127.0.0.1:{ftp_server.port}/up/a%20b/%231%25.bin"


@pytest.fixture
def proftpd(tmp_path):
    """ProFTPD as Debian configures it: no AllowStoreRestart; with mod_digest."""
    with Proftpd(str(tmp_path / "proftpd"), allow_restart=False) as server:
        yield server


def test_a_server_that_refuses_restarts_gets_StartOver_not_the_same_REST_again(proftpd):
    data = os.urandom(600_000)
    with open(os.path.join(proftpd.storage, "a.bin.part"), "wb") as partial:
        partial.write(data[:200_000])
    target = create_target("ftp", proftpd.options())
    try:
        assert target.held("a.bin") == 200_000
        with pytest.raises(StartOver, match="Append/Restart not permitted"):
            target.write("a.bin", io.BytesIO(data[200_000:]), 200_000, 600_000, lambda done: None)
        assert target.held("a.bin") == 200_000  # nothing appended nor lost: the engine discards, then sends from 0
        target.discard("a.bin")
        target.write("a.bin", io.BytesIO(data), 0, 600_000, lambda done: None)
        target.publish("a.bin", 600_000)
        with open(os.path.join(proftpd.storage, "a.bin"), "rb") as stored:
            assert stored.read() == data
    finally:
        target.close()


def test_digests_come_from_FEAT_and_match_the_bytes_by_HASH_and_by_X_commands(proftpd, tmp_path):
    data = os.urandom(100_000)
    with open(os.path.join(proftpd.storage, "a b#.bin"), "wb") as stored:
        stored.write(data)
    local = tmp_path / "local.bin"
    local.write_bytes(data)
    target = create_target("ftp", proftpd.options())
    try:
        assert target.digests == ("sha256", "md5", "crc32")  # HASH's SHA-256 first
        for algorithm in target.digests:
            assert target.digest("a b#.bin", algorithm) == local_digest(str(local), algorithm)
        from filesync.devices.ftp.connection import server_digest
        x_commands = {"XSHA256": "", "XMD5": "", "XCRC": ""}  # a server with mod_digest's older commands only
        with target.connection.session("X-commands") as ftp:
            for algorithm in ("sha256", "md5", "crc32"):
                assert server_digest(ftp, x_commands, "/a b#.bin", algorithm) == local_digest(str(local), algorithm)
        with pytest.raises(PermanentError):
            target.digest("missing.bin", "sha256")
    finally:
        target.close()


def test_an_offset_beyond_what_the_server_holds_starts_over(ftp_server):
    """The .part shrank since held() (somebody cut it): pyftpdlib answers REST with 554; sending again from byte 0
    is the way on, not parking the file."""
    os.makedirs(os.path.join(ftp_server.root, "up"), exist_ok=True)
    with open(os.path.join(ftp_server.root, "up/a.bin.part"), "wb") as partial:
        partial.write(b"x" * 100)
    target = target_for(ftp_server)
    try:
        with pytest.raises(StartOver, match="554"):
            target.write("a.bin", io.BytesIO(b"y" * 100), 200, 300, lambda done: None)
    finally:
        target.close()


def test_one_small_file_costs_the_commands_the_contract_needs(ftp_server, tmp_path, monkeypatch):
    """Issue 18, counted from the commands sent through the engine: TYPE I once per connection (not before every
    SIZE and STOR), no SIZE of the final name inside publish() after the rename, which the engine's check repeats at
    once, and for a small file no SIZE of the temporary name before the STOR (a leftover is replaced). Left per file:
    the free final name (a version published before a crash is found there, not sent again), the STOR, its size
    before the rename, the final name again just before it (RNTO replaces on most servers), the rename, the check."""
    sent = []
    original = ftplib.FTP.putcmd
    monkeypatch.setattr(ftplib.FTP, "putcmd", lambda ftp, line: (sent.append(line), original(ftp, line))[1])
    inbox = tmp_path / "inbox"
    names = ["a.bin", "b.bin", "c.bin"]
    for name in names:
        write_file(str(inbox / name), 20_000)
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "poll_interval": 0.2, "scan_interval": 0.5,
              "sources": {"inbox": {"kind": "folder", "path": str(inbox), "min_age": 0.0}},
              "targets": {"ftp": ftp_server.target_options("/up")},
              "pipelines": [{"source": "inbox", "targets": ["ftp"]}]}
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=60)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        runner.close()
    assert sent.count("TYPE I") == sent.count("USER tester")  # once per connection (transfers: one each), at login
    for name in names:
        final = f"/up/{name}"
        part = next(line.split(" ", 1)[1] for line in sent if line.startswith("STOR ") and name in line)
        mine = [line for line in sent if line.endswith((final, part))]
        assert mine == [f"SIZE {final}", f"STOR {part}", f"SIZE {part}", f"SIZE {final}", f"RNFR {part}",
                        f"RNTO {final}", f"SIZE {final}"]
