"""The `http` source against Debian's nginx started on 127.0.0.1 (support/nginx.py): listings from nginx's JSON index
and from a manifest, Range resume, servers that ignore Range, SHA-256 from the manifest, and the error classes."""
import hashlib
import json
import os
import random
import threading
import time
from contextlib import closing

import pytest

from conftest import assert_config_error
from filesync.devices import create_source
from filesync.devices.http_source import HttpSource
from filesync.engine.runner import LocalRunner
from filesync.errors import AuthRefused, DeviceUnavailable, TransientError, Vanished
from filesync.paths import device_name, safe_name
from support import nginx as nginx_support
from support.nginx import Nginx

MiB = 1 << 20


@pytest.fixture
def nginx(tmp_path):
    reason = nginx_support.missing()
    if reason:
        pytest.fail(reason)
    server = Nginx(str(tmp_path / "nginx"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def data_of(name, size):
    return random.Random(os.fsencode(name)).randbytes(size)


def source_for(url, **options):
    return create_source("web", {"kind": "http", "url": url, "connect_timeout": 2.0, "timeout": 10.0, **options})


def read_all(source, path, offset=0):
    with closing(source.read(path, offset)) as chunks:
        return b"".join(chunks)


def write_manifest(server, entries, name="manifest.json"):
    server.put(name, json.dumps({"files": entries}).encode())
    return server.url(name)


def test_lists_an_nginx_index_recursively_with_odd_names(nginx):
    names = ["plain.bin", "missions/survey.plan", "missions/deep/params.param", "sub dir/a b.bin", "hash#1.bin",
             "per%41cent.bin", "new\nline.bin", os.fsdecode(b"caf\xe9.bin"), "日本語.bin", "notes.tmp"]
    for name in names:
        nginx.put(name, data_of(name, 1000 + len(name)))
    nginx.put(".hidden", b"x")
    source = source_for(nginx.url(), exclude=["*.tmp"])
    listing = {entry.path: entry for entry in source.list()}
    assert sorted(listing) == sorted(n for n in names if n != "notes.tmp")
    for name, entry in listing.items():
        assert not entry.problem and entry.size == 1000 + len(name)
        assert abs(entry.mtime - time.time()) < 60
        # what the engine asks for is the device name of the safe name it keeps
        assert read_all(source, device_name(safe_name(name))) == data_of(name, 1000 + len(name)), name
    assert source.stat("missions/survey.plan").size == listing["missions/survey.plan"].size
    assert source.checksum("plain.bin") is None  # an index gives no digests


def test_lists_a_manifest_and_its_problems_without_stopping(nginx):
    good = data_of("good", 5000)
    nginx.put("files/missions/survey.plan", good)
    nginx.put("files/params/vehicle.params", b"PARAM 1\n")
    nginx.put("files/no_time.bin", b"12345")
    url = write_manifest(nginx, [
        {"path": "missions/survey.plan", "size": len(good), "mtime": 1764560000.5,
         "sha256": hashlib.sha256(good).hexdigest().upper()},
        {"path": "params/vehicle.params", "size": 8, "mtime": 1764560001},
        {"path": "no_time.bin", "size": 5},  # its time comes from the server's Last-Modified
        {"path": "no_size.bin"},
        {"path": "bad_sum.bin", "size": 1, "mtime": 1, "sha256": "abc"},
        {"path": "twice.bin", "size": 1, "mtime": 1}, {"path": "twice.bin", "size": 1, "mtime": 1},
        {"path": "not_served.bin", "size": 3},  # listed, but the server answers 404
        {"size": 7},  # no path: cannot even be named
    ], name="files/manifest.json")
    source = source_for(url)
    listing = {entry.path: entry for entry in source.list()}
    assert sorted(listing) == ["bad_sum.bin", "missions/survey.plan", "no_size.bin", "no_time.bin",
                               "not_served.bin", "params/vehicle.params", "twice.bin"]
    assert listing["missions/survey.plan"].mtime == 1764560000.5 and not listing["missions/survey.plan"].problem
    assert listing["params/vehicle.params"].size == 8 and not listing["params/vehicle.params"].problem
    assert not listing["no_time.bin"].problem and abs(listing["no_time.bin"].mtime - time.time()) < 60
    assert "no size" in listing["no_size.bin"].problem
    assert "sha256" in listing["bad_sum.bin"].problem
    assert "more than once" in listing["twice.bin"].problem
    assert "404" in listing["not_served.bin"].problem
    checksum = source.checksum("missions/survey.plan")
    assert (checksum.algorithm, checksum.value) == ("sha256", hashlib.sha256(good).hexdigest())
    assert source.checksum("params/vehicle.params") is None
    assert read_all(source, "missions/survey.plan") == good


def test_an_interrupted_read_resumes_byte_exact_with_a_range_request(nginx):
    data = data_of("big", 3 * MiB + 17)
    nginx.put("big.bin", data)
    source = source_for(nginx.url("slow/"))  # 256 KiB/s: the server can be killed in the middle of the body
    [entry] = source.list()
    received = []
    with pytest.raises((TransientError, DeviceUnavailable)) as raised:
        with closing(source.read("big.bin", 0)) as chunks:
            for chunk in chunks:
                received.append(chunk)
                if sum(map(len, received)) >= 300_000:
                    nginx.stop()
    assert "big.bin" in str(raised.value)
    offset = sum(map(len, received))
    assert 300_000 <= offset < len(data)
    with pytest.raises(DeviceUnavailable):
        list(source.read("big.bin", offset))
    nginx.start()
    fast = source_for(nginx.url())
    fast.list()
    rest = read_all(fast, "big.bin", offset)
    assert hashlib.sha256(b"".join(received) + rest).digest() == hashlib.sha256(data).digest()
    last = nginx.requests()[-1]
    assert (last["range"], last["status"], last["sent"]) == (f"bytes={offset}-", 206, len(data) - offset)
    assert read_all(fast, "big.bin", len(data)) == b""  # nothing left: the server's 416 is no error
    assert entry.size == len(data)


def test_a_server_that_ignores_range_is_read_from_its_start_and_the_copied_bytes_dropped(nginx):
    data = data_of("norange", MiB + 3)
    nginx.put("f.bin", data)
    source = source_for(nginx.url("norange/"))
    source.list()
    for offset in (1, 300_001, len(data) - 1):
        assert read_all(source, "f.bin", offset) == data[offset:]
    assert [(r["range"], r["status"]) for r in nginx.requests()[-3:]] == [
        ("bytes=1-", 200), ("bytes=300001-", 200), (f"bytes={len(data) - 1}-", 200)]


def test_a_file_that_changed_since_it_was_listed_is_not_finished(nginx):
    nginx.put("log.txt", b"a" * 1000)
    source = source_for(nginx.url())
    source.list()
    nginx.put("log.txt", b"b" * 2000)
    with pytest.raises(TransientError, match="changed since it was listed"):
        read_all(source, "log.txt", 10)
    source.list()
    assert read_all(source, "log.txt", 10) == b"b" * 1990


def test_missing_files_are_Vanished(nginx):
    nginx.put("a.bin", b"abc")
    source = source_for(nginx.url())
    with pytest.raises(Vanished):
        read_all(source, "gone.bin")
    with pytest.raises(Vanished):
        source.stat("gone.bin")
    url = write_manifest(nginx, [{"path": "a.bin", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}])
    manifest_source = source_for(url)
    assert manifest_source.checksum("a.bin").value == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(Vanished, match="no longer lists"):
        manifest_source.checksum("other.bin")


def test_a_server_that_is_down_is_DeviceUnavailable_and_comes_back(nginx):
    nginx.put("a.bin", b"abc")
    source = source_for(nginx.url())
    assert [e.path for e in source.list()] == ["a.bin"]
    nginx.stop()
    for call in (source.probe, source.list, lambda: source.stat("a.bin"), lambda: read_all(source, "a.bin")):
        with pytest.raises(DeviceUnavailable) as raised:
            call()
        assert "\n" not in str(raised.value)
    nginx.start()
    source.probe()
    assert read_all(source, "a.bin") == b"abc"


def test_credentials_refused_are_AuthRefused_without_the_secret(nginx, monkeypatch):
    nginx.put("m/a.bin", b"abc")
    refused = source_for(nginx.url("private/m/"), token="wrong-Pa55word")
    for call in (refused.list, lambda: read_all(refused, "a.bin"), lambda: refused.stat("a.bin")):
        with pytest.raises(AuthRefused) as raised:
            call()
        assert "wrong-Pa55word" not in str(raised.value) and "401" in str(raised.value)
    monkeypatch.setenv("WEB_TOKEN", nginx.token)
    accepted = source_for(nginx.url("private/m/"), token_env="WEB_TOKEN")
    assert [e.path for e in accepted.list()] == ["a.bin"]
    assert read_all(accepted, "a.bin") == b"abc"
    headers = source_for(nginx.url("private/m/"), headers={"Authorization": f"Bearer {nginx.token}"})
    assert read_all(headers, "a.bin", 1) == b"bc"


def test_server_errors_are_transient(nginx):
    source = source_for(nginx.url("broken/"))
    with pytest.raises(TransientError, match="503") as raised:
        source.list()
    assert not isinstance(raised.value, DeviceUnavailable)
    with pytest.raises(TransientError, match="503"):
        read_all(source, "a.bin")


def test_a_listing_that_is_not_one_says_so(nginx):
    nginx.put("plain.txt", b"hello")
    nginx.put("folder/a.bin", b"x")
    for url, text in ((nginx.url("plain.txt"), "not JSON"), (nginx.url("folder"), "moved to"),
                      (nginx.url("nothing/"), "404")):
        with pytest.raises(TransientError, match=text) as raised:
            source_for(url).list()
        assert "\n" not in str(raised.value)
    nginx.put("object.json", b'{"items": []}')
    with pytest.raises(TransientError, match="no \"files\" list"):
        source_for(nginx.url("object.json")).list()


def test_https_with_the_servers_ca(tmp_path):
    server = Nginx(str(tmp_path / "tls"), tls=True)
    server.start()
    try:
        server.put("a.bin", b"secure")
        trusted = source_for(server.url(), ca_bundle=server.ca_file)
        assert [e.path for e in trusted.list()] == ["a.bin"]
        assert read_all(trusted, "a.bin", 2) == b"cure"
        with pytest.raises(DeviceUnavailable, match="TLS"):
            source_for(server.url()).list()  # the system's CAs do not know this one
    finally:
        server.stop()


def test_sources_are_used_from_two_threads(nginx):
    """The finder and the downloader share a source (LocalRunner): each thread has its own connection."""
    for index in range(4):
        nginx.put(f"f{index}.bin", data_of(f"f{index}", 200_000))
    source = source_for(nginx.url())
    problems = []

    def reader(index):
        try:
            for _ in range(5):
                assert read_all(source, f"f{index}.bin", index) == data_of(f"f{index}", 200_000)[index:]
                source.list()
        except Exception as error:  # reported below; pytest cannot see a thread's failure
            problems.append(error)
    threads = [threading.Thread(target=reader, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not problems


@pytest.mark.parametrize("options, key, text", [
    ({}, "sources.web.url", "required"),
    ({"url": "ftp://host/x.json"}, "sources.web.url", "http:// or https://"),
    ({"url": "http://127.0.0.1/", "include": "*.plan"}, "sources.web.include", "a list"),
    ({"url": "http://127.0.0.1/", "headers": {"X-Key": 5}}, "sources.web.headers", "mapping of strings"),
    ({"url": "http://127.0.0.1/", "headers_env": {"X-Key": "FILESYNC_NO_SUCH_VARIABLE"}},
     "sources.web.headers_env.X-Key", "not set"),
    ({"url": "http://127.0.0.1/", "token": 1234}, "sources.web.token", "value not shown"),
    ({"url": "http://127.0.0.1/", "ca_bundle": "/no/such/ca.pem"}, "sources.web.ca_bundle", "no such file"),
    ({"url": "http://127.0.0.1/", "method": "PUT"}, "sources.web.method", "unknown key"),
])
def test_bad_config_is_one_line_naming_the_key(options, key, text):
    assert_config_error(lambda: create_source("web", {"kind": "http", **options}), key, text)


def test_registry_builds_the_http_source():
    source = create_source("web", {"kind": "http", "url": "http://127.0.0.1:1/"})
    assert isinstance(source, HttpSource) and not source.can_delete and source.checksum_algorithm == "sha256"


# Through the whole engine (LocalRunner): http -> staging -> a folder target.

def pipeline_config(tmp_path, url, **extra):
    os.makedirs(tmp_path / "target", exist_ok=True)
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "scan_interval": 0.3, "poll_interval": 0.3, "retry_base": 0.1, "retry_cap": 0.3, "max_attempts": 2,
              "sources": {"web": {"kind": "http", "url": url, "connect_timeout": 2.0}},
              "targets": {"disk": {"kind": "folder", "path": str(tmp_path / "target")}},
              "pipelines": [{"source": "web", "targets": ["disk"]}]}
    config.update(extra)
    return config


def test_a_copy_whose_sha256_differs_from_the_manifest_is_never_published(nginx, tmp_path):
    plan, params = data_of("plan", 70_000), data_of("params", 3000)
    nginx.put("m/survey.plan", plan)
    nginx.put("m/vehicle.params", params)
    url = write_manifest(nginx, [
        {"path": "survey.plan", "size": len(plan), "mtime": 1764560000, "sha256": hashlib.sha256(plan).hexdigest()},
        {"path": "vehicle.params", "size": len(params), "mtime": 1764560000, "sha256": "0" * 64},
    ], name="m/manifest.json")
    runner = LocalRunner(pipeline_config(tmp_path, url))
    try:
        deadline = time.monotonic() + 30
        runner.start()
        while {r.state for r in runner.ledger.files()} != {"uploaded", "failed"}:
            assert time.monotonic() < deadline, [(r.path, r.state, r.error) for r in runner.ledger.files()]
            time.sleep(0.1)
        records = {r.path: r for r in runner.ledger.files()}
    finally:
        runner.close()
    assert (tmp_path / "target" / "survey.plan").read_bytes() == plan
    assert records["survey.plan"].checksum == "sha256:" + hashlib.sha256(plan).hexdigest()
    bad = records["vehicle.params"]
    assert bad.state == "failed" and "the source says " + "0" * 64 in bad.error, bad.error
    assert bad.task("download").attempts == 2
    assert not (tmp_path / "target" / "vehicle.params").exists()
