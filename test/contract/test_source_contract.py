"""What every Source must do (filesync.devices.base.Source), checked against each peer's real device: names are
listed exactly or with their problem and never stop a scan; reads resume byte-exact; a vanished file is Vanished; an
unreachable device is DeviceUnavailable; deletes are idempotent; the device works again after close().

A check of a capability the device declares it lacks is skipped with the declared reason.
"""
import hashlib
import os
import random
from contextlib import closing

import pytest

from filesync.devices.base import local_checksum
from filesync.errors import AuthRefused, DeviceUnavailable, Vanished
from filesync.paths import check_relative, device_name, safe_name

PLAIN = "plain.bin"
# Names any device must carry exactly: a leading dash (an option to some tools), '#' and '%' (URL syntax, and '%41'
# reads as an escape), a space, and a name of 251 + 4 = 255 bytes (the longest a file system takes).
PRINTABLE = ["-dash.bin", "hash#1.bin", "per%41cent.bin", "per%cent.bin", "sub dir/a b.bin", "n" * 251 + ".bin",
             "日本語.bin"]
# Names a device may be unable to serve: then they are listed with `problem` set, and the others go on. LATIN1 is
# not UTF-8 (an old camera's 'café'); a peer whose expect['non_utf8'] is True must serve it exactly.
LATIN1 = os.fsdecode(b"caf\xe9.bin")
AWKWARD = [LATIN1, os.fsdecode(b"bad\xff\xfe.bin"), "new\nline.bin", "tab\tcontrol\x01.bin"]


def content(name, size=1000):
    """Distinct bytes for each name."""
    return random.Random(os.fsencode(name)).randbytes(size)


def read_all(source, path, offset=0):
    with closing(source.read(path, offset)) as chunks:
        return b"".join(chunks)


def test_odd_names_are_listed_exactly_or_with_their_problem(source_peer):
    names = [PLAIN] + PRINTABLE + AWKWARD
    for name in names:
        source_peer.put(name, content(name))
    listing = list(source_peer.source.list())  # must not raise for any one name
    served = {entry.path: entry for entry in listing if not entry.problem}
    problems = [entry for entry in listing if entry.problem]
    assert set(served) <= set(names), sorted(set(served) - set(names))
    for path, entry in served.items():
        assert device_name(safe_name(path)) == path
        check_relative(safe_name(path))
        assert entry.size == len(content(path))
        assert read_all(source_peer.source, path) == content(path), path
    if source_peer.expect.get("non_utf8"):
        assert LATIN1 in served, "this peer must carry names that are not UTF-8"
    missing = [name for name in names if name not in served]
    assert not [name for name in missing if name in [PLAIN] + PRINTABLE], "printable names must be listed exactly"
    assert len(problems) >= len(missing), (missing, problems)
    for entry in problems:
        assert isinstance(entry.problem, str) and entry.problem.strip()
        check_relative(safe_name(entry.path))


def test_read_resumes_byte_exact_from_any_offset(source_peer):
    data = content("big", 3 * (1 << 20) + 17)
    source_peer.put("big.bin", data)
    source = source_peer.source
    [entry] = [e for e in list(source.list()) if e.path == "big.bin"]
    assert entry.size == len(data)
    assert hashlib.sha256(read_all(source, "big.bin")).digest() == hashlib.sha256(data).digest()
    for offset in (1, 65_536, 1 << 20, len(data) - 1):
        assert read_all(source, "big.bin", offset) == data[offset:], offset
    assert read_all(source, "big.bin", len(data)) == b""
    with closing(source.read("big.bin", 0)) as chunks:  # stopped early, as the engine does: the next read is fine
        next(chunks)
    assert read_all(source, "big.bin", 5) == data[5:]


def test_stat_says_what_the_listing_says(source_peer):
    """The engine compares stat() with the listed size and time to tell a changed file (after a copy, before a
    removal): for an unchanged file the two must agree exactly, or every copy would be taken for a changed file."""
    for name in (PLAIN, "sub dir/a b.bin"):
        source_peer.put(name, content(name))
    listed = {entry.path: entry for entry in source_peer.source.list() if not entry.problem}
    for name in (PLAIN, "sub dir/a b.bin"):
        now = source_peer.source.stat(name)
        assert (now.size, now.mtime) == (listed[name].size, listed[name].mtime), name


def test_a_vanished_file_is_Vanished(source_peer):
    source_peer.put("gone.bin", b"x" * 100)
    source = source_peer.source
    assert [e.path for e in list(source.list())] == ["gone.bin"]
    assert source.stat("gone.bin").size == 100
    source_peer.remove("gone.bin")
    with pytest.raises(Vanished):
        source.stat("gone.bin")
    with pytest.raises(Vanished):
        read_all(source, "gone.bin")
    assert list(source.list()) == []


def test_an_unreachable_device_is_DeviceUnavailable_and_comes_back(source_peer):
    source_peer.put("a.bin", b"abc")
    source = source_peer.source
    assert [e.path for e in list(source.list())] == ["a.bin"]
    source_peer.stop()
    for call in (source.probe, lambda: list(source.list()), lambda: read_all(source, "a.bin")):
        with pytest.raises(DeviceUnavailable):
            call()
    source_peer.start()
    source.probe()
    assert [e.path for e in list(source.list())] == ["a.bin"]
    assert read_all(source, "a.bin") == b"abc"


def test_wrong_credentials_are_AuthRefused_without_the_secret(source_peer):
    if not source_peer.credentials:
        pytest.skip("this peer takes no credentials")
    refused = source_peer.new_source(password="wrong-Pa55word")
    try:
        with pytest.raises(AuthRefused) as raised:
            list(refused.list())
        assert "wrong-Pa55word" not in str(raised.value) and "\n" not in str(raised.value)
    finally:
        refused.close()


def test_delete_is_idempotent(source_peer):
    source = source_peer.source
    if not source.can_delete:
        pytest.skip(f"{source.kind} source declares can_delete False")
    source_peer.put("sub/del.bin", b"12345")
    source.delete("sub/del.bin")
    assert source_peer.get("sub/del.bin") is None
    source.delete("sub/del.bin")  # already gone: counts as removed
    with pytest.raises(Vanished):
        source.stat("sub/del.bin")


def test_checksum_is_the_digest_of_the_bytes(source_peer, tmp_path):
    source = source_peer.source
    data = content("sum", 70_000)
    source_peer.put("sum.bin", data)
    value = source.checksum("sum.bin") if source.checksum_algorithm else None
    expected = source_peer.expect.get("checksum")
    if expected is not None:
        assert (value is not None) == expected, value
    if value is None:
        pytest.skip(f"{source.kind} source declares checksum_algorithm {source.checksum_algorithm!r}, "
                    "and this server computes none")
    local = tmp_path / "sum.bin"
    local.write_bytes(data)
    assert value.algorithm == source.checksum_algorithm
    assert value.value == local_checksum(str(local), value.algorithm)


def test_the_device_works_again_after_close(source_peer):
    source_peer.put("a.bin", b"first")
    source = source_peer.source
    assert read_all(source, "a.bin") == b"first"
    source.close()
    source_peer.put("b.bin", b"second")
    assert sorted(e.path for e in list(source.list())) == ["a.bin", "b.bin"]
    assert read_all(source, "b.bin") == b"second"
    source.close()
    source.close()  # twice is fine too
    assert source.stat("a.bin").size == 5
