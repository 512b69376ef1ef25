"""Less ledger work per small file (issue 18, item 3): a batch claim takes its tasks in a few statements, an upload
claim finds the ready uploads from the downloads done instead of walking every upload still waiting for its download,
finish_batch reads its files in one statement. The answers and what the database holds afterwards are those of the
ledger before (its claim loop is kept here as the reference)."""
import random
import sqlite3

import pytest

from filesync.ledger.store import _READY, DOWNLOAD, REMOVE, UPLOAD, Ledger

# The claim of the ledger before this change: a statement for each file it took (three searches), its size, its
# update and its read.
_REFERENCE_SQL = {kind: f"""SELECT
    (SELECT t.file_id FROM tasks t WHERE t.kind = :kind AND t.device = :device AND t.state = 'active'
        AND t.owner = :worker AND t.file_id > :after AND {ready} ORDER BY t.file_id LIMIT 1),
    (SELECT t.file_id FROM tasks t WHERE t.kind = :kind AND t.device = :device AND t.state = 'waiting'
        AND t.not_before <= :now AND t.file_id > :after AND {ready} ORDER BY t.file_id LIMIT 1),
    (SELECT t.file_id FROM tasks t WHERE t.kind = :kind AND t.device = :device AND t.state = 'active'
        AND t.lease_until < :now AND t.file_id > :after AND {ready} ORDER BY t.file_id LIMIT 1)"""
    for kind, ready in _READY.items()}


def reference_claim_batch(ledger, kind, device, worker, lease_seconds, limit, small_bytes, workers=1):
    now = ledger._clock()
    claimed = []
    with ledger._transaction() as db:
        if limit > 1 and workers > 1:
            waiting = db.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM tasks t WHERE t.kind = ? AND t.device = ? "
                                 f"AND t.state = 'waiting' AND t.not_before <= ? AND {_READY[kind]} LIMIT ?)",
                                 (kind, device, now, limit * workers)).fetchone()[0]
            held = db.execute("SELECT COUNT(*) FROM tasks WHERE kind = ? AND device = ? AND state = 'active' "
                              "AND owner = ?", (kind, device, worker)).fetchone()[0]
            limit = max(1, min(limit, max(held, waiting // workers)))
        after = 0
        while len(claimed) < limit:
            own, waiting, expired = db.execute(_REFERENCE_SQL[kind], dict(kind=kind, device=device, worker=worker,
                                                                          now=now, after=after)).fetchone()
            candidates = [own] if own is not None else [c for c in (waiting, expired) if c is not None]
            if not candidates:
                break
            file_id = min(candidates)
            small = limit > 1 and db.execute("SELECT size < ? FROM files WHERE id = ?",
                                             (small_bytes, file_id)).fetchone()[0]
            if claimed and not small:
                break
            db.execute("UPDATE tasks SET state = 'active', owner = ?, lease_until = ?, updated = ? "
                       "WHERE file_id = ? AND kind = ? AND device = ?",
                       (worker, now + lease_seconds, now, file_id, kind, device))
            record = ledger._refresh_state(db, ledger._get(db, file_id), now)
            claimed.append((record, record.task(kind, device)))
            if not small:
                break
            after = file_id
    return claimed


NOW = 1_000_000.0


def _mixed_ledger(path, seed):
    """A ledger of two sources and two targets with tasks in every state a claim must tell apart: waiting (some in
    their backoff), held by this worker or another (some leases run out), done, parked; small and large files."""
    chance = random.Random(seed)
    ledger = Ledger(str(path), clock=lambda: NOW)
    for source in ("a", "b"):  # b's files are removed from it once delivered
        ledger.register(source, ["x", "y"], source == "b",
                        [(f"f{index}", chance.choice([100, 5000, 10**7]), 1.0) for index in range(40)])
    db = ledger._db
    for file_id, in db.execute("SELECT id FROM files").fetchall():
        rows = []
        download = chance.choice(["waiting", "waiting", "active", "done", "done", "done", "parked"])
        rows.append((download, "download"))
        for target in ("x", "y"):
            rows.append((chance.choice(["waiting", "waiting", "active", "done", "done", "parked"])
                         if download == "done" else "waiting", "upload", target))
        rows.append((chance.choice(["waiting", "waiting", "active", "done"]), "remove"))  # none for a's files
        for state, kind, *target in rows:
            db.execute("UPDATE tasks SET state = ?, owner = ?, lease_until = ?, not_before = ? "
                       "WHERE file_id = ? AND kind = ?" + (" AND device = ?" if target else ""),
                       (state, chance.choice(["w", "other"]) if state == "active" else "",
                        NOW + chance.choice([-5, 50]) if state == "active" else 0,
                        NOW + chance.choice([0, 0, 30]) if state == "waiting" else 0, file_id, kind, *target))
    return ledger


def _copy(ledger, path):
    copy = sqlite3.connect(str(path))
    ledger._db.backup(copy)
    copy.close()
    return Ledger(str(path), clock=lambda: NOW)


def _contents(ledger):
    return (ledger._db.execute("SELECT * FROM files ORDER BY id").fetchall(),
            ledger._db.execute("SELECT * FROM tasks ORDER BY file_id, kind, device").fetchall())


@pytest.mark.parametrize("seed", range(12))
def test_a_batch_claim_takes_what_the_claim_of_the_ledger_before_took(tmp_path, seed):
    ours = _mixed_ledger(tmp_path / "ours.db", seed)
    reference = _copy(ours, tmp_path / "reference.db")
    try:
        chance = random.Random(seed)
        for _ in range(30):
            kind, device = chance.choice([(DOWNLOAD, "a"), (DOWNLOAD, "b"), (UPLOAD, "x"), (UPLOAD, "y"),
                                          (REMOVE, "b")])
            arguments = (kind, device, chance.choice(["w", "other", "new"]), 60.0, chance.choice([1, 3, 8]), 8192,
                         chance.choice([1, 2, 4]))
            assert ours.claim_batch(*arguments) == reference_claim_batch(reference, *arguments), arguments
            assert _contents(ours) == _contents(reference)
    finally:
        ours.close()
        reference.close()


def test_an_upload_claim_does_not_walk_the_uploads_still_waiting_for_their_download(tmp_path):
    """The SQLite steps of an upload claim that finds two ready uploads behind a queue of 300 or 3,000 files still to
    download: the same, not ten times more."""
    steps = {}
    for files in (300, 3000):
        ledger = Ledger(str(tmp_path / f"{files}.db"), clock=lambda: NOW)
        try:
            ledger.register("a", ["x"], False, [(f"f{index}", 100, 1.0) for index in range(files)])
            ledger._db.execute("UPDATE tasks SET state = 'done' WHERE kind = 'download' AND file_id <= 2")
            counted = [0]

            def step():
                counted[0] += 1
            ledger._db.set_progress_handler(step, 100)
            assert [record.id for record, _ in ledger.claim_batch(UPLOAD, "x", "w", 60.0, 8, 8192)] == [1, 2]
            steps[files] = counted[0]
        finally:
            ledger.close()
    assert steps[3000] < 2 * steps[300], steps


def test_finish_batch_answers_and_records_what_finish_one_by_one_did(tmp_path):
    ours = _mixed_ledger(tmp_path / "ours.db", 99)
    reference = _copy(ours, tmp_path / "reference.db")
    try:
        held = ours._db.execute("SELECT file_id, kind, device, owner FROM tasks WHERE state = 'active' "
                                "ORDER BY file_id").fetchall()
        assert len(held) > 10
        outcomes = ["done", "retry", "park", "skip", "release", "wait"]
        calls = [(file_id, kind, device, owner, outcomes[number % len(outcomes)], "why", "loc", 5.0,
                  "ab" * 32 if kind == DOWNLOAD else "", "crc:1")
                 for number, (file_id, kind, device, owner) in enumerate(held)]
        calls.append(calls[0])  # a finish sent again (its reply lost): answered from what the first one did
        calls.append((held[1][0], held[1][1], held[1][2], "nobody", "done"))  # not its task: None
        calls.append((999_999, DOWNLOAD, "a", "w", "done"))  # no such file: None
        with reference.together():
            expected = [reference.finish(*call) for call in calls]
        assert ours.finish_batch(calls) == expected
        assert expected[-2:] == [None, None] and expected[0] == expected[len(held)]
        assert _contents(ours) == _contents(reference)
    finally:
        ours.close()
        reference.close()


def test_register_answers_what_the_ledger_then_holds(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        for downloaded in (False, True):
            created = ledger.register("a", ["x", "y"], True, [(f"f{downloaded}{index}", 100 + index, 1.5, problem)
                                                               for index, problem in enumerate(["", "bad name", ""])],
                                      downloaded=downloaded)
            assert created == [ledger.get(record.id) for record in created]
            assert [record.state for record in created] == (["downloaded"] * 3 if downloaded
                                                            else ["found", "failed", "found"])
    finally:
        ledger.close()
