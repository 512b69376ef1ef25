"""The soak's end checks catch what they are there to catch: a copy with other bytes, a file published twice, a log
missing on Flight Review, a source deleted before its targets held it, bytes sent again beyond one checkpoint
interval per interruption; and for content (issue 11): a version that stayed but is on a target under no name the
ledger records, a removal of bytes not on every target, a task left waiting or parked, a published file overwritten.
Built from files, server logs and a real ledger written here, without running a soak."""
import hashlib
import json
import os
import time

from filesync.ledger.store import Ledger
from filesync.paths import conflict_name, safe_name
from support.flight_review_server import Upload
from support.soak import CHECKPOINT, FTP_ROOTS, LedgerView, Plan, Soak, odd_name

LOCATION = "ftp://127.0.0.1:2121/"


class _Review:
    def __init__(self, uploads):
        self.uploads = uploads


def _soak(tmp_path, files, events, uploads=()):
    """A Soak over ["keep"] whose FTP root holds `files` ({remote path: bytes}) and whose server logged `events`."""
    soak = Soak(str(tmp_path), Plan(1, 10.0, ["keep"]), log=lambda line: None)
    soak.review = _Review(list(uploads))
    _put(soak, files)
    with open(soak.server.log_path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(event) + "\n" for event in events)
    return soak


def _put(soak, files):
    for remote, data in files.items():
        path = os.path.join(soak.server.root, remote)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)


def _expect(soak, pipeline, name, data, mtime=1_763_632_800.0, age=100.0, until=None):
    """The soak's ground truth: the source file held `data` from `age` seconds ago (until `until` seconds ago)."""
    now = time.monotonic()
    soak.record_version(pipeline, name, hashlib.sha256(data).hexdigest(), len(data), mtime, written=now - age)
    if until is not None:
        soak.history[(pipeline, name)][-1].until = now - until
    return soak.history[(pipeline, name)][-1]


def _clean_upload(remote, data):
    return [{"op": "STOR", "path": remote + ".part", "offset": 0, "received": len(data), "complete": True},
            {"op": "RNTO", "path": remote}]


def _ledger_version(ledger, source, path, data, mtime, uploads):
    """A version copied by filesync (download done with its SHA-256) and its uploads {target: (state, location)}."""
    [record] = ledger.register(source, list(uploads), False, [(path, len(data), mtime)])
    ledger.claim("download", source, "w", 30)
    ledger.finish(record.id, "download", source, "w", "done", sha256=hashlib.sha256(data).hexdigest())
    for target, (state, location) in uploads.items():
        if state != "waiting":
            ledger.claim("upload", target, "w", 30)
            ledger.finish(record.id, "upload", target, "w", state, location=location, error="gave up")
    return record


def test_a_clean_run_passes(tmp_path):
    data = b"x" * 1000
    soak = _soak(tmp_path, {"keep/a.bin": data}, _clean_upload("keep/a.bin", data))
    _expect(soak, "keep", "a.bin", data)
    soak._check()
    assert soak.failures == [] and soak.counts["resent_bytes"] == 0 and soak.counts["versions_checked"] == 1


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
    assert any("never a version" in failure and "keep/a.bin" in failure for failure in soak.failures), soak.failures


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
    _expect(soak, "del", "a.bin", data).deleted = True
    _expect(soak, "del", "b.bin", b"")  # never removed from the source, never on a target
    soak.deleted_early.append(("a.bin", "del2_ftp"))
    soak._check()
    assert any("deleted before every target" in failure for failure in soak.failures), soak.failures
    assert any("1 of 2 delete_after_upload" in failure for failure in soak.failures), soak.failures


def _two_versions(tmp_path, second_location):
    """keep/a.bin held `first` then `second` (same size); the ledger says where each went on keep_ftp."""
    first, second, m1, m2 = b"1" * 500, b"2" * 500, 1_763_632_800.0, 1_763_632_900.0
    conflict = f"keep/{conflict_name('a.bin', m2, 2)}"
    soak = _soak(tmp_path, {"keep/a.bin": first, conflict: second}, [])
    ledger = Ledger(soak.database)
    _ledger_version(ledger, "keep", "a.bin", first, m1, {"keep_ftp": ("done", LOCATION + "keep/a.bin")})
    _ledger_version(ledger, "keep", "a.bin", second, m2, {"keep_ftp": ("done", second_location(conflict))})
    ledger.close()
    _expect(soak, "keep", "a.bin", first, m1, age=100.0, until=50.0)
    _expect(soak, "keep", "a.bin", second, m2, age=50.0)
    return soak, conflict


def test_a_version_that_stayed_is_found_under_the_conflict_name_the_ledger_records(tmp_path):
    soak, conflict = _two_versions(tmp_path, lambda conflict: LOCATION + conflict.replace(" ", "%20"))
    soak._check()
    assert soak.failures == [] and soak.counts["versions_checked"] == 2 and soak.counts["conflict_copies"] == 1


def test_a_version_under_a_name_the_ledger_does_not_record_is_a_failure(tmp_path):
    soak, conflict = _two_versions(tmp_path, lambda conflict: LOCATION + "keep/a.bin")
    soak._check()
    assert any("only under a name the ledger does not record" in failure and conflict in failure
               for failure in soak.failures), soak.failures


def test_a_version_that_stayed_but_is_on_no_target_is_a_failure_and_one_that_never_stayed_is_not(tmp_path):
    soak = _soak(tmp_path, {"keep/a.bin": b"1" * 10}, [])
    _expect(soak, "keep", "a.bin", b"1" * 10, age=100.0, until=99.5)  # replaced within a scan interval: not required
    _expect(soak, "keep", "a.bin", b"2" * 10, age=99.5, until=50.0)  # stayed, then replaced: required
    _expect(soak, "keep", "a.bin", b"3" * 10, age=50.0)
    soak._check()
    assert soak.counts["versions_checked"] == 2
    failures = [failure for failure in soak.failures if "missing on an FTP target" in failure]  # a.bin: v1
    assert len(failures) == 1 and failures[0].startswith("2 versions") and "(version 2)" in failures[0] \
        and "(version 3)" in failures[0], soak.failures


def test_an_odd_name_counts_as_carried_only_under_its_safe_name(tmp_path):
    name = f"d0/{odd_name(0, 7)}"  # caf\xe9-00007.bin: not UTF-8
    data = b"odd" * 10
    soak = _soak(tmp_path, {f"keep/{safe_name(name)}": data}, [])
    soak.plan.odd.add(("keep", name))
    _expect(soak, "keep", name, data)
    soak._check()
    assert soak.failures == [] and soak.counts["odd_names_carried"] == 1 and "%E9" in safe_name(name)
    soak = _soak(tmp_path / "raw", {"keep/" + name: data}, [])  # the raw name on the target: not carried
    soak.plan.odd.add(("keep", name))
    _expect(soak, "keep", name, data)
    soak._check()
    assert soak.counts["odd_names_carried"] == 0 and any("missing" in failure for failure in soak.failures)


def test_a_removal_of_bytes_that_were_not_on_every_target_is_a_failure(tmp_path):
    data, other = b"d" * 10, b"e" * 10
    soak = _soak(tmp_path, {"del1/a.bin": data, "del2/a.bin": other}, [])
    os.makedirs(soak.inboxes["del"])
    _expect(soak, "del", "a.bin", data)
    soak._notice_removal("del", "a.bin")  # the source file is gone: filesync removed it
    assert soak.history[("del", "a.bin")][-1].deleted and soak.deleted_early == [("a.bin", "del_ftp2")]
    soak._check()
    assert any("deleted before every target" in failure for failure in soak.failures), soak.failures
    assert any("removed whose bytes are not on every target" in failure and "del_ftp2" in failure
               for failure in soak.failures), soak.failures
    assert not any("delete_after_upload sources removed" in failure for failure in soak.failures)


def test_a_removal_refused_because_the_source_changed_is_expected_and_counted(tmp_path):
    soak = _soak(tmp_path, {}, [])
    ledger = Ledger(soak.database)
    [first] = ledger.register("del", [], True, [("a.bin", 1, 1.0)])
    ledger.claim("download", "del", "w", 30)
    ledger.finish(first.id, "download", "del", "w", "done")
    ledger.register("del", [], True, [("a.bin", 2, 2.0)])  # a new version: the old one's removal is skipped
    ledger.close()
    soak.settle_ledger = LedgerView.read(soak.database)
    soak._check_nothing_stalled(soak.settle_ledger)
    soak._count_content_figures(soak.settle_ledger)
    assert soak.counts["removals_refused"] == 1
    assert [failure for failure in soak.failures if "stalled" in failure and "waiting" in failure]  # v2's tasks
    assert not [failure for failure in soak.failures if "skipped" in failure], soak.failures


def test_a_task_left_waiting_parked_or_skipped_for_no_known_reason_is_a_failure(tmp_path):
    soak = _soak(tmp_path, {}, [])
    ledger = Ledger(soak.database)
    for name, outcome in (("parked.bin", "park"), ("skipped.bin", "skip")):
        data = name.encode()
        _ledger_version(ledger, "keep", name, data, 1.0, {"keep_ftp": (outcome, "")})
    ledger.register("keep", ["keep_ftp"], False, [("waits.bin", 1, 1.0)])  # never copied
    ledger.close()
    soak.settle_ledger = LedgerView.read(soak.database)
    soak._check_nothing_stalled(soak.settle_ledger)
    assert any("stalled: 2 tasks still waiting" in failure and "waits.bin" in failure for failure in soak.failures)
    assert any("stalled: 1 tasks parked" in failure and "parked.bin" in failure for failure in soak.failures)
    assert any("skipped for a reason not expected" in failure and "skipped.bin" in failure
               for failure in soak.failures), soak.failures


def test_a_published_file_whose_bytes_change_is_an_overwrite(tmp_path):
    first, second = b"a" * 100, b"b" * 100
    soak = _soak(tmp_path, {"keep/a.bin": first}, _clean_upload("keep/a.bin", first))
    _expect(soak, "keep", "a.bin", first)
    soak._snapshot_targets()  # the watcher saw it published
    _put(soak, {"keep/a.bin": second})
    soak._check()
    assert soak.counts["overwritten"] == 1
    assert any("overwritten" in failure and "keep/a.bin" in failure for failure in soak.failures), soak.failures


def test_the_plan_replays_its_content_events_from_the_seed():
    nodes, pipelines = ["ledger", "finder"], ["keep", "del", "twin"]
    content = {"rewrite": 5, "append": 5, "flicker": 3, "twin": 4, "odd": 10}
    plans = [Plan.draw(42, 120.0, {"kill": 3}, 1.0, nodes, pipelines, content) for _ in range(2)]
    assert plans[0] == plans[1]
    plan = plans[0]
    assert plan.event_counts() == dict(content)
    assert {safe_name(name).rsplit("/", 1)[1][:3] for _, name in plan.odd} >= {"caf", "new", "#ha", "pct", "-da"}
    assert {len(os.fsencode(name.rsplit("/", 1)[1])) for _, name in plan.odd} >= {251, 252, 253, 254, 255}
    keep = {name for _, p, name, _ in plan.drops if p == "keep"}
    assert {name for _, p, name, _ in plan.drops if p == "twin" and name.startswith("sess")} <= keep
    without = Plan.draw(42, 120.0, {"kill": 3}, 1.0, nodes, pipelines)
    assert without.faults == plan.faults  # content events never change a seed's faults


def test_a_version_replaced_before_its_copy_skips_all_its_tasks_and_that_alone_is_expected(tmp_path):
    soak = _soak(tmp_path, {}, [])
    ledger = Ledger(soak.database)
    ledger.register("del", ["del_ftp1", "del_ftp2"], True, [("b.bin", 1, 1.0)])
    ledger.register("del", ["del_ftp1", "del_ftp2"], True, [("b.bin", 2, 2.0)])  # replaced before any copy
    # a version that was copied cannot have been replaced before its copy: its upload skipped so is a failure
    copied = _ledger_version(ledger, "keep", "c.bin", b"c", 1.0, {"keep_ftp": ("waiting", "")})
    ledger.claim("upload", "keep_ftp", "w", 30)
    ledger.finish(copied.id, "upload", "keep_ftp", "w", "skip",
                  error="replaced on the source by version 2 before it was copied")
    ledger.close()
    soak.settle_ledger = LedgerView.read(soak.database)
    soak._check_nothing_stalled(soak.settle_ledger)
    skipped = [failure for failure in soak.failures if "skipped for a reason not expected" in failure]
    assert len(skipped) == 1 and "c.bin" in skipped[0] and "b.bin v1" not in skipped[0], soak.failures
