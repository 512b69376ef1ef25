"""The `ftp` source against real servers on 127.0.0.1: pyftpdlib in a subprocess that the test kills and restarts
(support/ftp_server.py), pyftpdlib in a thread without MLSD/MLST, as older servers are, to exercise the LIST fallback,
and vsftpd and ProFTPD (support/ftp_servers.py) for odd names and server-side digests. test/contract checks the
Source contract on every server.
"""
import ftplib
import hashlib
import os
import queue
import threading
import time
from contextlib import closing

import pytest

from conftest import assert_config_error, write_file
from filesync.devices.base import local_checksum
from filesync.devices import create_source
from filesync.devices.ftp.source import FtpSource, parse_ftp_time
from filesync.engine.runner import LocalRunner
from filesync.errors import DeviceUnavailable, PermanentError, TransientError
from filesync.paths import device_name, safe_name
from support.ftp_servers import Proftpd, Vsftpd

MiB = 1 << 20
TREE = {"flight1/log.ulg": 3 * MiB + 11, "flight1/photos/a b.jpg": 70_000, "flight2/empty.bin": 0,
        "top.txt": 5, "deep/er/still/x.bin": 1234}
IGNORED = {"flight1/.hidden": 3, "flight1/upload.bin.part": 9}


def sha256_of(chunks):
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def make_tree(root, files):
    for path, size in files.items():
        write_file(os.path.join(root, *path.split("/")), size)
    os.makedirs(os.path.join(root, "empty_dir"), exist_ok=True)
    return {path: local_checksum(os.path.join(root, *path.split("/")), "sha256") for path in files}


def source_options(port, root="/", **extra):
    return {"kind": "ftp", "host": "127.0.0.1", "port": port, "user": "tester", "password": "secret", "root": root,
            "timeout": 10.0, **extra}


@pytest.fixture
def list_only_server(tmp_path):
    """A real pyftpdlib server in a thread that offers neither MLSD nor MLST (nor, so, the MLST feature)."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    class ListOnlyHandler(FTPHandler):
        proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items() if k not in ("MLSD", "MLST")}

    root = tmp_path / "list_root"
    root.mkdir()
    authorizer = DummyAuthorizer()
    authorizer.add_user("tester", "secret", str(root), perm="elradfmwMT")
    ListOnlyHandler.authorizer = authorizer
    server = FTPServer(("127.0.0.1", 0), ListOnlyHandler)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            server.serve_forever(timeout=0.1, blocking=False)
        server.close_all()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield str(root), server.address[1]
    finally:
        stop.set()
        thread.join(10)


def test_a_tree_is_listed_recursively_and_read_identical(ftp_server):
    digests = make_tree(ftp_server.root, {**TREE, **IGNORED})
    source = create_source("src", source_options(ftp_server.port))
    try:
        source.probe()
        listing = {f.path: f for f in source.list()}
        assert sorted(listing) == sorted(TREE)
        for path, size in TREE.items():
            local = os.path.join(ftp_server.root, *path.split("/"))
            assert listing[path].size == size
            assert abs(listing[path].mtime - os.path.getmtime(local)) < 1.01  # MLSD 'modify' has whole seconds
            assert sha256_of(source.read(path, 0)) == digests[path]
        assert source.stat("flight1/log.ulg").size == TREE["flight1/log.ulg"]
        with pytest.raises(PermanentError):
            source.stat("flight1/nothing.ulg")
        with pytest.raises(PermanentError):
            list(source.read("flight1/nothing.ulg", 0))
    finally:
        source.close()


def test_read_resumes_from_an_offset_with_rest(ftp_server):
    digests = make_tree(ftp_server.root, {"big.bin": 5 * MiB + 3})
    source = create_source("src", source_options(ftp_server.port))
    try:
        source.list()
        head = b"".join(source.read("big.bin", 0))[:2 * MiB + 1]
        tail = list(source.read("big.bin", 2 * MiB + 1))
        assert sum(map(len, tail)) == 3 * MiB + 2
        assert sha256_of([head, *tail]) == digests["big.bin"]
        assert list(source.read("big.bin", 5 * MiB + 3)) == []
        with pytest.raises(TransientError, match="less than"):  # not a 554 that would park the file
            list(source.read("big.bin", 6 * MiB))
    finally:
        source.close()


def test_list_falls_back_to_LIST_where_the_server_has_no_MLSD(list_only_server):
    root, port = list_only_server
    digests = make_tree(root, {**TREE, **IGNORED})
    source = create_source("src", source_options(port))
    try:
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", port, timeout=10)
            ftp.login("tester", "secret")
            assert "MLST" not in ftp.sendcmd("FEAT")
        listing = {f.path: f for f in source.list()}
        assert sorted(listing) == sorted(TREE)
        for path, size in TREE.items():
            local = os.path.join(root, *path.split("/"))
            assert listing[path].size == size
            assert abs(listing[path].mtime - os.path.getmtime(local)) < 1.01  # from MDTM
            assert sha256_of(source.read(path, 0)) == digests[path]
        assert source.stat("top.txt").size == 5
    finally:
        source.close()


def test_server_stopped_mid_download_and_restarted_reading_goes_on_from_its_offset(ftp_server):
    size = 48 * MiB  # more than loopback's socket buffers hold, so the kill lands mid-transfer
    digests = make_tree(ftp_server.root, {"video.mp4": size})
    source = create_source("src", source_options(ftp_server.port))
    received = []
    try:
        source.list()
        with closing(source.read("video.mp4", 0)) as chunks:
            received.append(next(chunks))
            ftp_server.stop()
            with pytest.raises(DeviceUnavailable):
                for chunk in chunks:
                    received.append(chunk)
        offset = sum(map(len, received))
        assert 0 < offset < size
        with pytest.raises(DeviceUnavailable):
            source.probe()
        with pytest.raises(DeviceUnavailable):
            list(source.read("video.mp4", offset))
        ftp_server.start()
        source.probe()
        rest = list(source.read("video.mp4", offset))
        assert sum(map(len, rest)) == size - offset  # nothing read twice
        assert sha256_of([*received, *rest]) == digests["video.mp4"]
    finally:
        source.close()


def test_a_file_that_grows_during_the_copy_is_not_finished(ftp_server):
    make_tree(ftp_server.root, {"growing.ulg": 32 * MiB, "touched.ulg": MiB})
    source = create_source("src", source_options(ftp_server.port))
    local = os.path.join(ftp_server.root, "growing.ulg")
    try:
        source.list()
        with closing(source.read("growing.ulg", 0)) as chunks:
            copied = len(next(chunks))
            with open(local, "ab") as handle:
                handle.write(b"more data")
            with pytest.raises(TransientError, match="not finished") as raised:
                for chunk in chunks:
                    copied += len(chunk)
        assert not isinstance(raised.value, DeviceUnavailable)
        assert copied <= 32 * MiB  # nothing beyond the size the copy began with was handed over
        # Changed since it was listed: refused before any byte moves.
        with pytest.raises(TransientError, match="since it was listed"):
            list(source.read("growing.ulg", 0))
        # Rewritten in place with the same size: only its time tells.
        os.utime(os.path.join(ftp_server.root, "touched.ulg"), (time.time() + 120, time.time() + 120))
        with pytest.raises(TransientError, match="not finished"):
            list(source.read("touched.ulg", 0))
        relisted = {f.path: f for f in source.list()}  # once listed again as it is now, it reads
        assert relisted["growing.ulg"].size == 32 * MiB + 9
        assert sum(map(len, source.read("growing.ulg", 0))) == 32 * MiB + 9
    finally:
        source.close()


def test_delete_removes_the_file_and_a_missing_one_counts_as_removed(ftp_server):
    make_tree(ftp_server.root, {"a.bin": 10})
    source = create_source("src", source_options(ftp_server.port))
    try:
        source.delete("a.bin")
        source.delete("a.bin")
        assert not os.path.exists(os.path.join(ftp_server.root, "a.bin"))
    finally:
        source.close()


def test_the_finder_and_the_downloader_each_get_their_own_connection(ftp_server):
    make_tree(ftp_server.root, {"a.bin": 3 * MiB})
    source = create_source("src", source_options(ftp_server.port))
    errors = []

    def lister():
        try:
            for _ in range(20):
                assert [f.path for f in source.list()] == ["a.bin"]
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            source.close()

    try:
        thread = threading.Thread(target=lister)
        thread.start()
        for _ in range(5):
            assert sum(map(len, source.read("a.bin", 0))) == 3 * MiB
        thread.join(60)
        assert not errors
    finally:
        source.close()
    assert not source._connections


def test_one_odd_name_on_a_LIST_only_server_does_not_stop_the_scan(tmp_path):
    """Finding: a name with a newline on vsftpd (LIST splits its line; MDTM of the phantom half answers 550) failed
    every scan, and a name that is not UTF-8 made ftplib raise. Now the newline name is listed with its problem, the
    other files as they are, and the Latin-1 name exactly (surrogate-escaped), readable under it."""
    latin = os.fsdecode(b"caf\xe9.ulg")
    files = {"a.ulg": b"a" * 10, "new\nline.ulg": b"n", latin: b"latin"}
    with Vsftpd(str(tmp_path / "vsftpd")) as server:
        for name, data in files.items():
            with open(os.path.join(os.fsencode(server.storage), os.fsencode(name)), "wb") as handle:
                handle.write(data)
        source = create_source("src", server.options())
        try:
            listing = {f.path: f for f in source.list()}
            assert sorted(listing) == sorted(files)
            assert listing["new\nline.ulg"].problem == "its name holds a line break, which an FTP command cannot carry"
            assert not listing["a.ulg"].problem and listing["a.ulg"].size == 10
            assert not listing[latin].problem and listing[latin].size == 5
            assert safe_name(latin) == "caf%E9.ulg" and device_name("caf%E9.ulg") == latin
            assert b"".join(source.read(latin, 0)) == b"latin"
        finally:
            source.close()


def test_checksum_is_the_servers_sha256_where_it_computes_one(ftp_server, tmp_path):
    make_tree(ftp_server.root, {"a b.bin": 100_000})
    source = create_source("src", source_options(ftp_server.port))
    try:
        assert source.checksum_algorithm == "sha256"
        assert source.checksum("a b.bin") is None  # pyftpdlib has no HASH nor XSHA256
    finally:
        source.close()
    with Proftpd(str(tmp_path / "proftpd")) as server:
        digests = make_tree(server.storage, {"a b.bin": 100_000})
        source = create_source("src", server.options())
        try:
            checksum = source.checksum("a b.bin")
            assert (checksum.algorithm, checksum.value) == ("sha256", digests["a b.bin"])
        finally:
            source.close()


def test_parse_ftp_time():
    assert parse_ftp_time("20240102030405") == 1704164645.0
    assert parse_ftp_time("20240102030405.250") == 1704164645.25
    assert parse_ftp_time("garbage") is None


@pytest.mark.parametrize("options, key, text", [
    ({}, "sources.src.host", "required"),
    ({"host": "127.0.0.1", "port": "21"}, "sources.src.port", "an integer"),
    ({"host": "127.0.0.1", "port": 70000}, "sources.src.port", "1 to 65535"),
    ({"host": "127.0.0.1", "include": "*.ulg"}, "sources.src.include", "a list"),
    ({"host": "127.0.0.1", "exclude": [None]}, "sources.src.exclude", "glob"),
    ({"host": "127.0.0.1", "path": "/logs"}, "sources.src.path", "unknown key"),
])
def test_bad_config_is_one_line_naming_the_key(options, key, text):
    assert_config_error(lambda: create_source("src", {"kind": "ftp", **options}), key, text)


def test_registry_builds_the_ftp_source():
    assert isinstance(create_source("src", {"kind": "ftp", "host": "127.0.0.1"}), FtpSource)


# Through the whole engine: ftp source -> staging -> a folder target.

class HoldingReads:
    """Wraps FtpSource.read to count the bytes taken from the server and the offsets asked for, and to hold the read
    of `path` once `after` bytes of it have arrived, while the test kills the server. Bytes and errors are the
    server's own; only the moment is chosen here."""

    def __init__(self, original, path, after):
        self.original, self.path, self.after = original, path, after
        self.lock = threading.Lock()
        self.bytes_read = 0
        self.offsets = []
        self.held = queue.Queue()

    def read(self, source, path, offset):
        with self.lock:
            self.offsets.append((path, offset))
        hold = path == self.path and offset == 0
        with closing(self.original(source, path, offset)) as chunks:
            for chunk in chunks:
                with self.lock:
                    self.bytes_read += len(chunk)
                offset += len(chunk)
                yield chunk
                if hold and offset >= self.after:
                    hold = False
                    release = threading.Event()
                    self.held.put(release)
                    release.wait(60)


def test_pipeline_from_an_ftp_server_that_restarts_mid_download(tmp_path, ftp_server, monkeypatch):
    files = {"logs/2024-01-02/10_00_00.ulg": 40 * MiB, **TREE}  # more than loopback buffers hold
    digests = make_tree(os.path.join(ftp_server.root, "vehicle"), files)
    big = "logs/2024-01-02/10_00_00.ulg"
    reads = HoldingReads(FtpSource.read, big, 2 * MiB)
    monkeypatch.setattr(FtpSource, "read", lambda source, path, offset: reads.read(source, path, offset))
    os.makedirs(tmp_path / "target")
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "checkpoint_bytes": 256 * 1024, "scan_interval": 0.5, "poll_interval": 0.5,
              "retry_base": 0.2, "retry_cap": 1.0, "lease_seconds": 20.0,
              "sources": {"gcs": source_options(ftp_server.port, root="/vehicle")},
              "targets": {"disk": {"kind": "folder", "path": str(tmp_path / "target")}},
              "pipelines": [{"source": "gcs", "targets": ["disk"]}]}
    runner = LocalRunner(config)
    try:
        runner.start()
        release = reads.held.get(timeout=60)
        ftp_server.stop()
        release.set()
        time.sleep(2)  # the engine finds the server gone and waits for it
        ftp_server.start()
        runner.run_until_settled(timeout=120)
        records = runner.ledger.files()
    finally:
        runner.close()
    assert sorted(r.path for r in records) == sorted(files)
    assert {r.state for r in records} == {"uploaded"}, [(r.path, r.state, r.error) for r in records]
    for path, digest in digests.items():
        assert local_checksum(tmp_path / "target" / path, "sha256") == digest
    offsets = [offset for path, offset in reads.offsets if path == big]
    assert len(offsets) >= 2 and offsets[0] == 0 and offsets[1] > 2 * MiB - 256 * 1024, offsets  # went on
    # What was in flight beyond the last checkpoint when the server died is all that is read twice.
    assert reads.bytes_read - sum(files.values()) <= 256 * 1024 + 256 * 1024
