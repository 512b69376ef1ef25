"""What every Target must do (filesync.devices.base.Target), checked against each peer's real device: uploads land
under the temporary name and publish without replacing another file; an interrupted upload resumes byte-exact (or,
where the server refuses restarts, raises StartOver and works from byte 0); digest() is the digest of the bytes;
same size with other bytes is told apart; bytes damaged on the way are refused or told apart (where the peer offers a
damaging link); an unreachable device is DeviceUnavailable; the device works after close().

The engine's rules (never overwrite, keep_both) are tested with the engine; these are the device's own duties. A check
of a capability the device declares it lacks is skipped with the declared reason. An upload API (verifiable False:
Flight Review, an HTTP endpoint) names what it stores itself: the checks of final names are skipped for it, and it
must instead publish where its location says, be DeviceUnavailable while away and work again after close().
"""
import hashlib
import io
import random
from contextlib import closing

import pytest

from filesync.devices.base import local_digest
from filesync.errors import AuthRefused, DeviceUnavailable, FileError, FinalNameTaken, StartOver
from filesync.paths import PART_SUFFIX, part_name, safe_name

MiB = 1 << 20


def content(name, size=1000):
    """Distinct bytes for each name."""
    return random.Random(name).randbytes(size)


def upload(target, path, data, offset=0):
    """write() from `offset`, recording progress; returns the progress values."""
    seen = []
    target.write(path, io.BytesIO(data[offset:]), offset, len(data), lambda done, note=None: seen.append(done))
    return seen


def read_back(target, path):
    with closing(target.read(path)) as chunks:
        return b"".join(chunks)


class StreamBroke(Exception):
    """The local stream failed (a stand-in for the engine's process dying mid-upload)."""


class BreakingStream(io.BytesIO):
    """A stream that raises StreamBroke once `limit` bytes have been read from it."""

    def __init__(self, data, limit):
        super().__init__(data)
        self.limit = limit

    def read(self, size=-1):
        if self.tell() >= self.limit:
            raise StreamBroke(f"stopped after {self.limit} bytes")
        return super().read(min(size if size >= 0 else self.limit, self.limit - self.tell()))


def file_target(target_peer):
    """The peer's target, or a skip where it is an upload API (no final names to look at)."""
    if not target_peer.target.verifiable:
        pytest.skip(f"{target_peer.target.kind} target names what it stores itself (verifiable False)")
    return target_peer.target


def test_an_upload_api_publishes_where_its_location_says(target_peer):
    target = target_peer.target
    if target.verifiable:
        pytest.skip(f"{target.kind} target has final names: checked by the other tests")
    data = target_peer.sample("a.ulg", 300_000)
    upload(target, "d/a.ulg", data)
    location = target.publish("d/a.ulg", len(data))
    assert target_peer.fetch(location) == data
    target.close()
    upload(target, "d/b.ulg", data)  # works again after close, and a second upload is a second copy
    assert target.publish("d/b.ulg", len(data)) != location
    target_peer.stop()
    for call in (target.probe, lambda: upload(target, "d/c.ulg", data)):
        with pytest.raises(DeviceUnavailable):
            call()
    target_peer.start()
    target.probe()


def test_upload_lands_under_the_temporary_name_then_publishes(target_peer):
    target, data = file_target(target_peer), content("a", 300_000)
    assert target.stat("d/e/a.bin") is None and target.held("d/e/a.bin") == 0
    seen = upload(target, "d/e/a.bin", data)
    if target_peer.expect.get("part_visible", True):
        assert seen and seen[-1] == len(data) and seen == sorted(seen)
        assert target_peer.get("d/e/a.bin" + PART_SUFFIX) == data
        assert target.held("d/e/a.bin") == len(data)
    assert target_peer.get("d/e/a.bin") is None and target.stat("d/e/a.bin") is None
    location = target.publish("d/e/a.bin", len(data))
    assert location and location == target.location("d/e/a.bin")
    assert target_peer.get("d/e/a.bin") == data and target_peer.get("d/e/a.bin" + PART_SUFFIX) is None
    assert target.stat("d/e/a.bin") == len(data) and target.held("d/e/a.bin") == 0
    if target.readable:
        assert read_back(target, "d/e/a.bin") == data


def test_odd_safe_names_are_written_as_given(target_peer):
    target = file_target(target_peer)
    names = ["-dash.bin", "hash#1.bin", "sub dir/a b.bin", "n" * 251 + ".bin", "日本語.bin",
             safe_name("per%41cent.bin"), safe_name("new\nline.bin"), safe_name("caf\udce9.bin")]
    for name in names:
        data = content(name)
        upload(target, name, data)
        target.publish(name, len(data))
        assert target_peer.get(name) == data, name
        assert target.stat(name) == len(data)
        assert target_peer.get(part_name(name)) is None


def test_publish_never_replaces_another_file_unless_told(target_peer):
    target, ours, theirs = file_target(target_peer), content("ours", 5000), content("theirs", 5000)
    target_peer.put("taken.bin", theirs)
    upload(target, "taken.bin", ours)
    with pytest.raises(FinalNameTaken):
        target.publish("taken.bin", len(ours))
    assert target_peer.get("taken.bin") == theirs
    assert target.held("taken.bin") == len(ours)  # our upload waits, untouched
    target.publish("taken.bin", len(ours), replace=True)
    assert target_peer.get("taken.bin") == ours


def test_a_target_that_publishes_exclusively_sends_nothing_before_publish(target_peer):
    """publishes_exclusively(size) lets the engine skip its look at the final name: publish() must then be what
    refuses a taken name (test_publish_never_replaces_another_file_unless_told), and nothing of the file may reach
    the peer before it, or a refused file would have cost its transfer (and a version published before a crash would
    go again); discard() then leaves the other file alone. fingerprint() tells size and digest at once."""
    target, data = file_target(target_peer), content("exclusive", 5000)
    if not target.publishes_exclusively(len(data)):
        pytest.skip(f"{target.kind} target looks at the final name first (publishes_exclusively False)")
    upload(target, "exclusive.bin", data)
    assert target_peer.get("exclusive.bin") is None and target_peer.get(part_name("exclusive.bin")) is None
    assert target.fingerprint("exclusive.bin", "sha256") == (None, "")
    target.publish("exclusive.bin", len(data))
    assert target_peer.get("exclusive.bin") == data
    if "sha256" in target.digests:
        assert target.fingerprint("exclusive.bin", "sha256") == (len(data), hashlib.sha256(data).hexdigest())
    else:
        assert target.stat("exclusive.bin") == len(data)
    theirs = content("theirs", 5000)
    target_peer.put("taken.bin", theirs)
    upload(target, "taken.bin", data)
    with pytest.raises(FinalNameTaken):
        target.publish("taken.bin", len(data))
    target.discard("taken.bin")
    assert target_peer.get("taken.bin") == theirs and target_peer.get(part_name("taken.bin")) is None


def test_a_target_that_sends_small_files_whole_stores_over_a_leftover(target_peer):
    """sends_whole(size) lets the engine skip held(): write() from byte 0 must then replace whatever an interrupted
    attempt left under the temporary name, longer and other bytes included (no tail of it may stay)."""
    target, data = file_target(target_peer), content("whole", 5000)
    if not target.sends_whole(len(data)):
        pytest.skip(f"{target.kind} target resumes every file from held() (sends_whole False)")
    target_peer.put(part_name("whole.bin"), content("leftover", 9000))
    upload(target, "whole.bin", data)
    target.publish("whole.bin", len(data))
    assert target_peer.get("whole.bin") == data and target_peer.get(part_name("whole.bin")) is None


def test_an_interrupted_upload_resumes_byte_exact_or_starts_over(target_peer):
    target, data = file_target(target_peer), content("big", 3 * MiB + 5)
    with pytest.raises(StreamBroke):
        target.write("big.bin", BreakingStream(data, MiB + 3), 0, len(data), lambda done, note=None: None)
    held = target.held("big.bin")
    assert 0 <= held <= MiB + 3
    if target_peer.expect.get("holds_partial", True):
        assert held > 0, "the bytes that arrived before the break are kept"
    assert target_peer.get(part_name("big.bin")) in (None, data[:held])
    started_over = False
    if not target.resumable:
        target.discard("big.bin")
        upload(target, "big.bin", data)
    else:
        try:
            upload(target, "big.bin", data, offset=held)
        except StartOver:
            started_over = True
            target.discard("big.bin")
            assert target.held("big.bin") == 0
            upload(target, "big.bin", data)
    expected = target_peer.expect.get("start_over")
    if expected is not None and held:
        assert started_over == expected, "StartOver exactly where the server refuses restarts"
    target.publish("big.bin", len(data))
    assert target_peer.get("big.bin") == data


def test_discard_drops_the_unfinished_upload(target_peer):
    target = file_target(target_peer)
    upload(target, "x.bin", b"12345")
    target.discard("x.bin")
    assert target.held("x.bin") == 0 and target_peer.get(part_name("x.bin")) is None
    target.discard("x.bin")  # nothing there: fine


def test_digests_are_the_digests_of_the_bytes(target_peer, tmp_path):
    target, data = file_target(target_peer), content("sum", 70_001)
    expected = target_peer.expect.get("digests")
    if expected is not None:
        assert tuple(target.digests) == expected
    if not target.digests:
        pytest.skip(f"{target.kind} target declares no digests")
    target_peer.put("sum.bin", data)
    local = tmp_path / "sum.bin"
    local.write_bytes(data)
    for algorithm in target.digests:
        assert target.digest("sum.bin", algorithm) == local_digest(str(local), algorithm), algorithm


def test_same_size_other_bytes_are_told_apart(target_peer, tmp_path):
    target, data = file_target(target_peer), content("mine", 20_000)
    upload(target, "mine.bin", data)
    target.publish("mine.bin", len(data))
    changed = bytearray(data)
    changed[10_000] ^= 0xFF
    target_peer.put("mine.bin", bytes(changed))
    assert target.stat("mine.bin") == len(data)  # the size alone cannot tell
    local = tmp_path / "mine.bin"
    local.write_bytes(data)
    if target.digests:
        algorithm = target.digests[0]
        assert target.digest("mine.bin", algorithm) != local_digest(str(local), algorithm)
    elif target.readable:
        assert read_back(target, "mine.bin") == bytes(changed)
    else:
        pytest.skip(f"{target.kind} target declares no digests and readable False")


def test_damaged_bytes_never_pass_for_the_file(target_peer, tmp_path):
    """Through a link that flips a byte of what the device sends: the target refuses the bytes, or the copy it keeps
    does not pass for the file (the digest the engine verifies with differs), whatever the device claimed beside it."""
    if target_peer.damaging is None:
        pytest.skip("no damaging link for this peer")
    data = content("hurt", 70_000)
    local = tmp_path / "hurt.bin"
    local.write_bytes(data)
    with target_peer.damaging() as (target, damage):
        upload(target, "warm.bin", b"first")  # the device meets its peer over a sound link first
        target.publish("warm.bin", 5)
        damage(True)
        try:
            upload(target, "hurt.bin", data)
            target.publish("hurt.bin", len(data))
        except FileError:
            assert target_peer.get("hurt.bin") is None, "refused: nothing published"
            return
        assert target_peer.get("hurt.bin") != data, "the link damaged the copy"
        if target.digests:
            algorithm = target.digests[0]
            assert target.digest("hurt.bin", algorithm) != local_digest(str(local), algorithm)
        else:
            assert read_back(target, "hurt.bin") != data


def test_an_unreachable_device_is_DeviceUnavailable_and_comes_back(target_peer):
    target = file_target(target_peer)
    upload(target, "a.bin", b"abc")
    target_peer.stop()
    calls = [target.probe, lambda: target.stat("a.bin"),
             lambda: (upload(target, "b.bin", b"xyz"), target.publish("b.bin", 3))]
    if target_peer.expect.get("held_asks_device", True):
        calls.append(lambda: target.held("a.bin"))
    for call in calls:
        with pytest.raises(DeviceUnavailable):
            call()
    target_peer.start()
    target.probe()
    assert target.held("a.bin") == 3
    target.publish("a.bin", 3)
    assert target_peer.get("a.bin") == b"abc"


def test_wrong_credentials_are_AuthRefused_without_the_secret(target_peer):
    if not target_peer.credentials:
        pytest.skip("this peer takes no credentials")
    refused = target_peer.new_target(password="wrong-Pa55word")
    try:
        with pytest.raises(AuthRefused) as raised:
            refused.probe()
        assert "wrong-Pa55word" not in str(raised.value) and "\n" not in str(raised.value)
    finally:
        refused.close()


def test_delete_is_idempotent(target_peer):
    target = file_target(target_peer)
    if not target.can_delete:
        pytest.skip(f"{target.kind} target declares can_delete False")
    upload(target, "sub/del.bin", b"12345")
    target.publish("sub/del.bin", 5)
    target.delete("sub/del.bin")
    assert target_peer.get("sub/del.bin") is None and target.stat("sub/del.bin") is None
    target.delete("sub/del.bin")  # already gone: counts as removed


def test_the_device_works_again_after_close(target_peer):
    target = file_target(target_peer)
    upload(target, "a/one.bin", b"first")
    target.close()
    assert target.held("a/one.bin") == 5
    target.publish("a/one.bin", 5)
    target.close()
    target.close()  # twice is fine too
    upload(target, "a/two.bin", b"second")  # its directory is found again after close
    target.publish("a/two.bin", 6)
    assert target_peer.get("a/one.bin") == b"first" and target_peer.get("a/two.bin") == b"second"
