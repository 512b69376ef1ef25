"""A small file through the engine to real FTP servers (issue 18, item 2): it is sent whole, with no look at its
temporary name before the STOR, so the STOR is what meets a leftover of an interrupted attempt; its final name is
still looked at first (on_conflict, or the name already holds these bytes: nothing sent at all). On pyftpdlib and
vsftpd (no digests: sameness by reading back) and on ProFTPD with mod_digest and AllowOverwrite off (ProFTPD's own
default: no STOR nor RNTO over a file)."""
import ftplib
import os
import posixpath
import random
from contextlib import ExitStack, closing
from types import SimpleNamespace

import pytest

from filesync.engine.runner import LocalRunner
from filesync.paths import part_name
from support.ftp_server import FtpServerProcess
from support.ftp_servers import Proftpd, Vsftpd

SIZE = 20_000


@pytest.fixture(params=["pyftpdlib", "vsftpd", "proftpd-no-overwrite"])
def server(request, tmp_path):
    """A running server: its kind, the ftp target's options and the folder they store into."""
    directory = str(tmp_path / "server")
    with ExitStack() as stack:
        if request.param == "pyftpdlib":
            running = FtpServerProcess(os.path.join(directory, "files"), os.path.join(directory, "ftp.log")).start()
            stack.callback(running.stop)
            options, storage = running.target_options("/"), running.root
        else:
            running = stack.enter_context(Vsftpd(directory) if request.param == "vsftpd"
                                          else Proftpd(directory, allow_overwrite=False))
            options, storage = running.options(), running.storage
        yield SimpleNamespace(kind=request.param, options=options, storage=storage)


@pytest.fixture
def sent(monkeypatch):
    """The FTP commands the engine sends, in order."""
    lines = []
    original = ftplib.FTP.putcmd
    monkeypatch.setattr(ftplib.FTP, "putcmd", lambda ftp, line: (lines.append(line), original(ftp, line))[1])
    return lines


def run(tmp_path, server, data, **target_extra):
    """Send inbox/a.bin holding `data` to the server through the engine; its ledger record."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.bin").write_bytes(data)
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "poll_interval": 0.2, "scan_interval": 0.5, "retry_base": 0.1, "retry_cap": 0.5,
              "sources": {"inbox": {"kind": "folder", "path": str(inbox), "min_age": 0.0}},
              "targets": {"ftp": {**server.options, "timeout": 10.0, **target_extra}},
              "pipelines": [{"source": "inbox", "targets": ["ftp"]}]}
    with closing(LocalRunner(config)) as runner:
        runner.run_until_settled(timeout=60)
        [record] = runner.ledger.files()
    return record


def stored(server):
    """{name: bytes} of every file in the server's folder."""
    return {name: open(os.path.join(server.storage, name), "rb").read() for name in os.listdir(server.storage)}


def first(sent, *prefixes, ending):
    """The index of the first command starting with one of `prefixes` and ending with `ending` (None: there is none)."""
    return next((i for i, line in enumerate(sent) if line.startswith(prefixes) and line.endswith(ending)), None)


@pytest.mark.parametrize("policy", ["keep_both", "park", "overwrite"])
def test_a_final_name_taken_by_other_bytes_is_found_before_sending_and_on_conflict_applies(tmp_path, server, sent,
                                                                                            policy):
    ours, theirs = random.Random(1).randbytes(SIZE), random.Random(2).randbytes(SIZE)  # same size: compared
    with open(os.path.join(server.storage, "a.bin"), "wb") as taken:
        taken.write(theirs)
    record = run(tmp_path, server, ours, on_conflict=policy)
    final = posixpath.join(server.options["root"], "a.bin")
    assert first(sent, "SIZE ", ending=final) < (first(sent, "STOR ", ending=".part") or len(sent))
    files = stored(server)
    if policy == "keep_both":
        assert record.state == "uploaded" and files.pop("a.bin") == theirs
        [(conflict, copy)] = files.items()
        assert copy == ours and record.task("upload").location.endswith("/" + conflict)
    elif policy == "park":
        assert record.state == "failed" and "on_conflict: park" in record.error
        assert files == {"a.bin": theirs}  # the upload refused by publish() is not left behind
    else:
        assert record.state == "uploaded" and files == {"a.bin": ours}


def test_a_final_name_that_holds_these_bytes_gets_no_second_copy(tmp_path, server, sent):
    """A crash between publishing and recording (or a ledger rebuilt from staging): the engine sees these very bytes
    under the final name, by the server's digest (ProFTPD) or by reading them back, and sends nothing."""
    ours = random.Random(1).randbytes(SIZE)
    with open(os.path.join(server.storage, "a.bin"), "wb") as published:
        published.write(ours)
    record = run(tmp_path, server, ours)
    final = posixpath.join(server.options["root"], "a.bin")
    assert record.state == "uploaded" and record.task("upload").location.endswith(final)
    assert stored(server) == {"a.bin": ours}
    assert not [line for line in sent if line.startswith("STOR ")]
    compared_by = ("HASH ", "XSHA256 ") if server.kind.startswith("proftpd") else ("RETR ",)
    assert first(sent, *compared_by, ending=final) is not None


def test_a_leftover_of_an_interrupted_attempt_is_stored_over(tmp_path, server, sent):
    """A kill mid-STOR left part of this version under its temporary name: the next attempt sends the small file
    from byte 0 without asking what is there (ProFTPD with AllowOverwrite off refuses the STOR: the leftover is
    deleted and the STOR sent again)."""
    ours = random.Random(1).randbytes(SIZE)
    part = part_name("a.bin", 1)  # the first version registered in a new ledger
    with open(os.path.join(server.storage, part), "wb") as leftover:
        leftover.write(ours[:7000])
    record = run(tmp_path, server, ours)
    assert record.id == 1 and record.state == "uploaded" and record.task("upload").attempts == 0
    assert stored(server) == {"a.bin": ours}
    remote_part = posixpath.join(server.options["root"], part)
    assert [line for line in sent if line.endswith(remote_part)][0] == f"STOR {remote_part}"
