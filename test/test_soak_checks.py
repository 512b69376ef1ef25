"""The soak's end checks catch what they are there to catch: a copy with other bytes, a file published twice, a log
missing on Flight Review, a source deleted before its targets held it, and bytes sent again beyond one checkpoint
interval per interruption. Built from files and server logs written here, without running a soak."""
import hashlib
import json
import os

from support.flight_review_server import Upload
from support.soak import CHECKPOINT, FTP_ROOTS, Plan, Soak


class _Review:
    def __init__(self, uploads):
        self.uploads = uploads


def _soak(tmp_path, files, events, uploads=()):
    """A Soak over ["keep", "px4"] whose FTP root holds `files` ({remote path: bytes}) and whose server logged
    `events`; it expects every file of `files` that sits under keep/ or px4/."""
    soak = Soak(str(tmp_path), Plan(1, 10.0, ["keep"]), log=lambda line: None)
    soak.review = _Review(list(uploads))
    for remote, data in files.items():
        path = os.path.join(soak.server.root, remote)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
    with open(soak.server.log_path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(event) + "\n" for event in events)
    return soak


def _expect(soak, pipeline, name, data):
    soak.expected[(pipeline, name)] = (len(data), hashlib.sha256(data).hexdigest())
    soak.counts[f"files {pipeline}"] += 1
    soak.counts["files"] += 1


def _clean_upload(remote, data):
    return [{"op": "STOR", "path": remote + ".part", "offset": 0, "received": len(data), "complete": True},
            {"op": "RNTO", "path": remote}]


def test_a_clean_run_passes(tmp_path):
    data = b"x" * 1000
    soak = _soak(tmp_path, {"keep/a.bin": data}, _clean_upload("keep/a.bin", data))
    _expect(soak, "keep", "a.bin", data)
    soak._check()
    assert soak.failures == [] and soak.counts["resent_bytes"] == 0


def test_other_bytes_and_a_second_publication_are_failures(tmp_path):
    data = b"x" * 1000
    soak = _soak(tmp_path, {"keep/a.bin": b"y" * 1000, "keep/b.bin": data},
                 _clean_upload("keep/a.bin", data) + _clean_upload("keep/b.bin", data) + [
                     {"op": "RNTO", "path": "keep/b.bin"}])
    _expect(soak, "keep", "a.bin", data)
    _expect(soak, "keep", "b.bin", data)
    soak._check()
    assert any("differ" in failure and "keep/a.bin" in failure for failure in soak.failures), soak.failures
    assert any("more than once" in failure and "keep/b.bin" in failure for failure in soak.failures), soak.failures


def test_a_missing_copy_and_a_log_flight_review_never_took_are_failures(tmp_path):
    log = b"ULog\x01\x12\x35" + b"z" * 100
    soak = _soak(tmp_path, {"px4/2026/1.ulg": log}, _clean_upload("px4/2026/1.ulg", log),
                 uploads=[Upload("id", "1.ulg", {}, "/x", len(log), hashlib.sha256(b"other").hexdigest())])
    soak.pipelines = ["px4"]
    _expect(soak, "px4", "2026/1.ulg", log)
    _expect(soak, "keep", "gone.bin", b"abc")
    soak._check()
    assert any("missing on an FTP target" in failure and "gone.bin" in failure for failure in soak.failures)
    assert any("never reached Flight Review" in failure and "2026/1.ulg" in failure for failure in soak.failures)


def test_bytes_sent_again_beyond_one_checkpoint_per_interruption_are_a_failure(tmp_path):
    data = os.urandom(3 * CHECKPOINT)
    remote = os.path.join(FTP_ROOTS["keep_ftp"].lstrip("/"), "a.bin")
    restarts = [{"op": "STOR", "path": remote + ".part", "offset": 0, "received": 2 * CHECKPOINT, "complete": False},
                {"op": "STOR", "path": remote + ".part", "offset": 0, "received": len(data), "complete": True},
                {"op": "RNTO", "path": remote}]
    soak = _soak(tmp_path, {remote: data}, restarts)
    _expect(soak, "keep", "a.bin", data)
    soak.counts["kills"] = 1  # one interruption allows one checkpoint interval; 2 were sent again
    soak._check()
    assert soak.counts["resent_bytes"] == 2 * CHECKPOINT
    assert any("sent again" in failure for failure in soak.failures), soak.failures


def test_an_early_deletion_and_a_source_never_removed_are_failures(tmp_path):
    data = b"d" * 10
    soak = _soak(tmp_path, {"del1/a.bin": data, "del2/a.bin": data},
                 _clean_upload("del1/a.bin", data) + _clean_upload("del2/a.bin", data))
    _expect(soak, "del", "a.bin", data)
    _expect(soak, "del", "b.bin", b"")  # never removed from the source, never on a target
    soak.deleted_early.append(("a.bin", "del2_ftp"))
    soak.counts["deletions_seen"] = 1
    soak._check()
    assert any("deleted before every target" in failure for failure in soak.failures), soak.failures
    assert any("1 of 2 delete_after_upload" in failure for failure in soak.failures), soak.failures
