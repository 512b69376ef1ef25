"""The FTP target against a real pyftpdlib server: temporary names, resume, idempotent publish, errors."""
import io
import os

import pytest

from conftest import write_file
from filesync.devices import create_target
from filesync.errors import DeviceUnavailable, PermanentError


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
    location = target.publish("d/e/a.bin", str(local), 300_000)
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
    target.publish("a.bin", str(local), 500_000)
    [stor] = ftp_server.events("STOR")
    assert stor["offset"] == 123_456 and stor["received"] == 500_000 - 123_456
    with open(os.path.join(ftp_server.root, "up/a.bin"), "rb") as stored:
        assert stored.read() == data
    target.close()


def test_a_final_name_with_the_same_bytes_counts_as_done(ftp_server, tmp_path):
    local = tmp_path / "a.bin"
    write_file(str(local), 70_000)
    os.makedirs(os.path.join(ftp_server.root, "up"), exist_ok=True)
    with open(os.path.join(ftp_server.root, "up/a.bin"), "wb") as final:
        final.write(local.read_bytes())
    target = target_for(ftp_server)
    assert target.published("a.bin", str(local), 70_000).endswith("/up/a.bin")
    assert target.published("missing.bin", str(local), 70_000) is None
    with open(os.path.join(ftp_server.root, "up/a.bin"), "r+b") as final:
        final.write(b"X")  # same size, other bytes: somebody else's file
    with pytest.raises(PermanentError, match="different file"):
        target.published("a.bin", str(local), 70_000)
    assert ftp_server.events("STOR") == []
    target.close()


def test_wrong_password_and_absent_server_mean_unavailable(ftp_server, tmp_path):
    target = target_for(ftp_server, password="wrong-Pa55word")
    with pytest.raises(DeviceUnavailable, match="530") as refused:
        target.probe()
    assert "wrong-Pa55word" not in str(refused.value)
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
