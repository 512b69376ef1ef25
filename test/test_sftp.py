"""The sftp target and source against Debian's OpenSSH sshd started by the test (support/sshd.py): resume after a
connection killed mid-file from what the server holds, never replacing a final name (the plain rename, which OpenSSH
refuses onto an existing name), posix-rename@openssh.com with replace, fsync@openssh.com before the rename, the
server's sha256sum (names quoted, never run as shell syntax), host keys (unknown, changed, pinned), credentials, and
the source's listing, changed files and permissions. test/contract runs the shared device checks on the same server.
"""
import io
import os
import random
import time
from contextlib import closing

import paramiko
import pytest
from paramiko.sftp import CMD_EXTENDED, CMD_NAMES, CMD_OPEN, CMD_RENAME, CMD_STAT

import filesync.devices.sftp as sftp_module
from conftest import assert_config_error
from filesync.devices import create_source, create_target
from filesync.engine.runner import LocalRunner
from filesync.errors import (AuthRefused, DeviceUnavailable, FinalNameTaken, PermanentError, TransientError,
                             Vanished)
from filesync.paths import part_name
from support.sshd import PASSWORD, Sshd, keygen

MiB = 1 << 20


@pytest.fixture
def sshd(tmp_path):
    """A running sshd serving a storage folder of its own user."""
    server = Sshd(str(tmp_path / "sshd"))
    server.start()
    try:
        yield server
    finally:
        server.remove()


def content(name, size):
    return random.Random(name).randbytes(size)


def put(sshd, name, data):
    """A file in the storage as the server's user would have made it."""
    path = os.path.join(sshd.storage, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    sshd.own(sshd.storage)


def stored(sshd, name):
    try:
        with open(os.path.join(sshd.storage, name), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def upload(target, path, data, offset=0, progress=lambda done, note=None: None):
    target.write(path, io.BytesIO(data[offset:]), offset, len(data), progress)


class CountingStream(io.BytesIO):
    """Counts the bytes the device read from the staged copy: what it sent."""
    taken = 0

    def read(self, size=-1):
        block = super().read(size)
        CountingStream.taken += len(block)
        return block


def test_an_upload_cut_mid_file_resumes_from_what_the_server_holds(sshd):
    target = create_target("t", sshd.options())
    data = content("big", 24 * MiB + 7)
    killed_at = []

    def kill_midway(done, note=None):
        if done >= 10 * MiB and not killed_at:
            killed_at.append(done)
            sshd.kill_sessions()  # the connection drops; the server stays up

    CountingStream.taken = 0
    with pytest.raises(DeviceUnavailable):
        target.write("flights/big.bin", CountingStream(data), 0, len(data), kill_midway)
    held = target.held("flights/big.bin")
    assert 0 < held <= killed_at[0] <= CountingStream.taken
    assert stored(sshd, part_name("flights/big.bin")) == data[:held]
    stream = CountingStream(data)
    stream.seek(held)
    target.write("flights/big.bin", stream, held, len(data), lambda done, note=None: None)
    target.publish("flights/big.bin", len(data))
    assert stored(sshd, "flights/big.bin") == data
    sent_again = CountingStream.taken - len(data)
    print(f"killed at {killed_at[0]} bytes handed over; the server held {held}; {sent_again} bytes sent again")
    assert sent_again <= 8 * MiB, "at most what was in flight (the SSH window and socket buffers) goes again"
    target.close()


def test_publish_never_replaces_another_file_even_when_it_appears_after_the_check(sshd, monkeypatch):
    target = create_target("t", sshd.options())
    put(sshd, "taken.bin", b"theirs")
    upload(target, "taken.bin", b"ours!!")
    with pytest.raises(FinalNameTaken):
        target.publish("taken.bin", 6)
    # The other file appears between our check and the rename: the server's plain rename must refuse it.
    real = sftp_module._size_or_none
    asked = []

    def racing(sftp, path):
        if path.endswith(b"/taken.bin") and not asked:
            asked.append(path)
            return None  # "free" at the check
        return real(sftp, path)
    monkeypatch.setattr(sftp_module, "_size_or_none", racing)
    with pytest.raises(FinalNameTaken):
        target.publish("taken.bin", 6)
    assert asked and stored(sshd, "taken.bin") == b"theirs" and target.held("taken.bin") == 6
    assert 'rename old "' in sshd.requests() and "posix-rename" not in sshd.requests()
    monkeypatch.undo()
    target.publish("taken.bin", 6, replace=True)
    assert stored(sshd, "taken.bin") == b"ours!!" and target.held("taken.bin") == 0
    assert 'posix-rename old "' in sshd.requests()
    target.close()


def test_the_part_is_fsynced_before_the_rename(sshd):
    target = create_target("t", sshd.options())
    upload(target, "f.bin", b"12345")
    target.publish("f.bin", 5)
    lines = sshd.requests().splitlines()
    fsynced = [i for i, line in enumerate(lines) if line.startswith("fsync ") and line.endswith('f.bin.part"')]
    renamed = [i for i, line in enumerate(lines) if line.startswith("rename old ") and 'f.bin.part"' in line]
    assert fsynced and renamed and fsynced[-1] < renamed[-1], lines
    target.close()


ODD = "a'b $(touch pwned); c`id`\" -x.bin"


@pytest.mark.parametrize("kind", ["target", "source"])
def test_the_servers_sha256sum_quotes_names(sshd, tmp_path, kind):
    data = content("sum", 300_001)
    put(sshd, ODD, data)
    local = tmp_path / "sum.bin"
    local.write_bytes(data)
    from filesync.devices.base import local_digest
    expected = local_digest(str(local), "sha256")
    if kind == "target":
        device = create_target("t", sshd.options(remote_sha256=True))
        assert device.digests == ("sha256",)
        assert device.digest(ODD, "sha256") == expected
    else:
        device = create_source("s", sshd.options(remote_sha256=True))
        assert device.checksum_algorithm == "sha256"
        assert device.checksum(ODD).value == expected
    assert not os.path.exists(os.path.join(sshd.home, "pwned")) and stored(sshd, "pwned") is None
    device.close()


def test_without_remote_sha256_there_is_no_digest_and_copies_are_read_back(sshd):
    target = create_target("t", sshd.options())
    assert target.digests == () and target.readable
    with pytest.raises(PermanentError):
        target.digest("x.bin", "sha256")
    put(sshd, "x.bin", b"back")
    with closing(target.read("x.bin")) as blocks:
        assert b"".join(blocks) == b"back"
    assert create_source("s", sshd.options()).checksum("x.bin") is None
    assert "sha256sum" not in sshd.log()
    target.close()


def test_sha256sum_failures_are_named(sshd):
    os.makedirs(os.path.join(sshd.storage, "folder.bin"))
    target = create_target("t", sshd.options(remote_sha256=True))
    with pytest.raises(Vanished):
        target.digest("no-such-file.bin", "sha256")
    with pytest.raises(PermanentError) as raised:
        target.digest("folder.bin", "sha256")  # sha256sum: ...: Is a directory
    assert "sha256sum failed" in str(raised.value) and "Is a directory" in str(raised.value)
    target.probe()  # the connection is fine
    target.close()


def _refused(sshd, **options):
    target = create_target("t", sshd.options(**options))
    try:
        with pytest.raises(AuthRefused) as raised:
            target.probe()
    finally:
        target.close()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_an_unknown_host_is_refused_before_any_credential_is_sent(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    before = sshd.log()
    message = _refused(sshd, known_hosts=str(empty), auth="password")
    assert f"127.0.0.1:{sshd.port}" in message and sshd.host_fingerprint in message
    assert "not in known_hosts" in message and "refusing to connect" in message
    new = sshd.log()[len(before):]
    assert "sftptest" not in new and "password" not in new.lower(), new


def test_a_changed_host_key_is_refused_naming_both_keys(sshd):
    old = sshd.host_fingerprint
    sshd.stop()
    sshd.new_host_key()  # known_hosts still names the old key
    sshd.start()
    message = _refused(sshd)
    assert f"host key of 127.0.0.1:{sshd.port} changed" in message
    assert old in message and sshd.host_fingerprint in message and "refusing to connect" in message
    message = _refused(sshd, known_hosts="", host_key_fingerprint=old)
    assert "changed" in message and old in message and sshd.host_fingerprint in message


def test_a_pinned_fingerprint_connects(sshd):
    target = create_target("t", sshd.options(known_hosts="", host_key_fingerprint=sshd.host_fingerprint))
    target.probe()
    target.close()


def test_wrong_credentials_are_AuthRefused_in_one_line_without_the_secret(sshd, tmp_path):
    message = _refused(sshd, auth="password", password="wrong-Pa55word")
    assert "wrong-Pa55word" not in message and "refused user 'sftptest' (password)" in message
    other = str(tmp_path / "other_key")
    keygen(other)
    message = _refused(sshd, key_file=other)
    assert other in message and "refused user" in message
    locked = str(tmp_path / "locked_key")
    keygen(locked, passphrase="key-Secret-99")
    message = _refused(sshd, key_file=locked)
    assert "key_passphrase" in message and "key-Secret-99" not in message
    os.environ["FILESYNC_TEST_WRONG_PASSPHRASE"] = "nope-nope-77"
    try:
        message = _refused(sshd, key_file=locked, key_passphrase_env="FILESYNC_TEST_WRONG_PASSPHRASE")
    finally:
        del os.environ["FILESYNC_TEST_WRONG_PASSPHRASE"]
    assert "nope-nope-77" not in message
    assert not [name for name in os.listdir(sshd.storage)], "nothing is left on the server"


def test_password_and_key_with_passphrase_log_in(sshd, tmp_path):
    create_target("t", sshd.options(auth="password")).probe()
    locked = str(tmp_path / "locked_key")
    with open(sshd.authorized_keys, "a") as handle:
        handle.write(keygen(locked, passphrase="key-Secret-99") + "\n")
    (tmp_path / "passphrase").write_text("key-Secret-99\n")
    target = create_target("t", sshd.options(key_file=locked, key_passphrase_file=str(tmp_path / "passphrase")))
    target.probe()
    target.close()
    assert PASSWORD not in sshd.log()


def test_configuration_is_checked_at_start(sshd):
    options = sshd.options()
    assert_config_error(lambda: create_target("t", {**options, "known_hosts": ""}), "targets.t", "known_hosts")
    assert_config_error(lambda: create_target("t", {**options, "host_key_fingerprint": sshd.host_fingerprint}),
                        "targets.t", "exactly one")
    assert_config_error(lambda: create_target("t", {**options, "known_hosts": "", "host_key_fingerprint": "ab"}),
                        "targets.t.host_key_fingerprint", "SHA256:")
    assert_config_error(lambda: create_source("s", {**options, "key_file": ""}), "sources.s", "key_file or password")
    assert_config_error(lambda: create_target("t", {**options, "known_hosts": "/nonexistent/known"}),
                        "targets.t.known_hosts", "no such file")


def test_unreachable_server_is_DeviceUnavailable(sshd):
    target = create_target("t", sshd.options(timeout=3.0))
    sshd.stop()
    with pytest.raises(DeviceUnavailable) as raised:
        target.probe()
    assert f"127.0.0.1:{sshd.port}" in str(raised.value)
    sshd.start()
    target.probe()
    target.close()


def test_a_folder_the_user_may_not_write_is_PermanentError(sshd):
    locked = os.path.join(sshd.storage, "locked")
    os.makedirs(locked)
    os.chmod(locked, 0o755)  # root's: the server's user cannot write in it
    target = create_target("t", sshd.options())
    with pytest.raises(PermanentError) as raised:
        upload(target, "locked/a.bin", b"abc")
    assert "permission denied" in str(raised.value)
    target.probe()  # the connection is fine
    target.close()


def test_source_lists_recursively_with_globs_and_a_folder_it_cannot_read(sshd):
    for name in ("log/a.ulg", "log/b.txt", "log/deep/c.ulg", ".hidden.ulg", "x.ulg.part"):
        put(sshd, name, name.encode())
    secret = os.path.join(sshd.storage, "secret")
    os.makedirs(secret)
    os.chmod(secret, 0o700)  # root's: not listable by the server's user
    source = create_source("s", sshd.options(include=["*.ulg"]))
    listing = {entry.path: entry for entry in source.list()}
    assert sorted(p for p, e in listing.items() if not e.problem) == ["log/a.ulg", "log/deep/c.ulg"]
    assert listing["secret"].problem and "cannot be listed" in listing["secret"].problem
    assert listing["log/a.ulg"].size == 9 and listing["log/a.ulg"].mtime > 0
    source.close()


def test_a_file_that_changes_during_the_copy_is_not_finished(sshd):
    data = content("growing", 6 * MiB)
    put(sshd, "g.bin", data)
    source = create_source("s", sshd.options())
    assert [e.path for e in source.list()] == ["g.bin"]
    with pytest.raises(TransientError):
        with closing(source.read("g.bin", 0)) as blocks:
            for index, _ in enumerate(blocks):
                if index == 0:
                    with open(os.path.join(sshd.storage, "g.bin"), "ab") as handle:
                        handle.write(b"more")
    source.close()


def test_a_missing_root_is_DeviceUnavailable(sshd):
    source = create_source("s", sshd.options(root=sshd.storage + "/not-there"))
    with pytest.raises(DeviceUnavailable):
        source.list()
    source.close()


def test_through_the_engine_versions_keep_both_and_refused_credentials_park_nothing(sshd, tmp_path):
    """folder -> sftp through LocalRunner: a second version of a name goes under its conflict name (the first keeps
    its own), and while the password is wrong the uploads wait, counting no attempt and parking nothing."""
    from filesync.engine.runner import LocalRunner
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "log.ulg").write_bytes(content("v1", 300_000))
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "scan_interval": 0.3, "poll_interval": 0.5, "retry_base": 0.1, "retry_cap": 0.5,
              "sources": {"inbox": {"kind": "folder", "path": str(inbox), "min_age": 0.0}},
              "targets": {"ssh": sshd.options(auth="password", password="wrong-Pa55word")},
              "pipelines": [{"source": "inbox", "targets": ["ssh"]}]}
    runner = LocalRunner(config)
    try:
        runner.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (runner.ledger.files() and
                                                    runner.ledger.files()[0].state == "downloaded"):
            time.sleep(0.1)
        time.sleep(2)  # refused a few times meanwhile
        [record] = runner.ledger.files()
        assert record.state == "downloaded" and record.task("upload").attempts == 0
        assert "wrong-Pa55word" not in record.task("upload").error
    finally:
        runner.close()
    config["targets"]["ssh"] = sshd.options(auth="password")
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=60)
        (inbox / "log.ulg").write_bytes(content("v2", 300_000))
        os.utime(inbox / "log.ulg", (1_763_632_800, 1_763_632_800))
        deadline = time.monotonic() + 20
        while len(runner.ledger.versions("inbox", "log.ulg")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        runner.run_until_settled(timeout=60)
        first, second = runner.ledger.versions("inbox", "log.ulg")
    finally:
        runner.close()
    assert (first.state, second.state) == ("uploaded", "uploaded")
    assert stored(sshd, "log.ulg") == content("v1", 300_000)
    assert stored(sshd, "log.2025-11-20T10-00-00Z.ulg") == content("v2", 300_000)
    assert second.task("upload").location.endswith("log.2025-11-20T10-00-00Z.ulg")


def test_one_small_file_costs_the_requests_the_contract_needs(sshd, tmp_path, monkeypatch):
    """Issue 18, counted from the SFTP requests the engine's uploads send: the temporary name is synced on the
    handle that wrote it (not opened again for fsync@openssh.com), and publish() does not stat the final name after
    the rename, which the engine's check repeats at once. Per file: stat of the final name (free?), of the .part
    (resume?), open, write, fsync, close, stat of the .part and of the final name before the rename, rename, then
    the engine's check (stat: its size, as no remote_sha256 here). The root folder is asked once, not per file."""
    made, clients = [], set()
    original = paramiko.SFTPClient._async_request

    def recording(client, fileobj, kind, *arguments):
        named = kind in (CMD_STAT, CMD_OPEN, CMD_RENAME, CMD_EXTENDED)
        made.append((CMD_NAMES[kind], os.fsencode(arguments[0]) if named else b""))
        clients.add(id(client))  # each transfer has a connection of its own
        return original(client, fileobj, kind, *arguments)
    monkeypatch.setattr(paramiko.SFTPClient, "_async_request", recording)
    inbox = tmp_path / "inbox"
    names = ["a.bin", "b.bin", "c.bin"]
    for name in names:
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(content(name, 20_000))
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "poll_interval": 0.2, "scan_interval": 0.5,
              "sources": {"inbox": {"kind": "folder", "path": str(inbox), "min_age": 0.0}},
              "targets": {"far": sshd.options()}, "pipelines": [{"source": "inbox", "targets": ["far"]}]}
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=60)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        runner.close()
    for name in names:
        mine = [kind for kind, path in made if name.encode() in path]
        assert mine == ["stat", "stat", "open", "stat", "stat", "rename", "stat"], (name, made)
    assert [path for kind, path in made if kind == "stat"].count(sshd.storage.encode()) <= len(clients)  # once each
    assert [kind for kind, _ in made].count("close") == len(names)
    assert made.count(("extended", b"fsync@openssh.com")) == len(names)
