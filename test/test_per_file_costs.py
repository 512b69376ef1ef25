"""What one small file costs, pinned as an upper bound: bench/per_file_costs.py's counts must not grow.

The bounds are the counts measured when they were written (docs/benchmarks.md, "What one small file costs"): work
that lowers them (issue 18) should lower the bounds too; a change that raises them fails here.
"""
import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))

import per_file_costs  # noqa: E402

# case: {metric: at most per file}
# Small files are claimed and recorded in batches (a worker takes up to 8 in one transaction and records them in
# one): the 4 transactions a file (claim and finish, twice) are 4 a batch, and the staging and target folders are
# fsynced once a batch. The runs here put 2 and 6 files in one batch each, so what is left is the staged copy and
# its description (2 fsyncs), the target's copy (1), plus a batch more in one run now and then (timing: the finder
# registering over two scans costs 4 transactions and 2 folder fsyncs over 4 files).
BOUNDS = {
    "folder": {"fsyncs": 5.5, "fsync ledger wal": 1.5, "fsync staging": 2.5, "fsync target": 1.5, "ledger finish": 2,
               "ledger checkpoint": 0},
    # ftp: SIZE final, PASV, STOR, SIZE .part, SIZE final, RNFR, RNTO, SIZE final (TYPE I once per connection; no
    # SIZE of a small file's .part before the STOR); sftp: stat final and .part, open, writes, fsync, close, stat .part and final,
    # rename, stat (plus an SSH window adjustment now and then); s3: PutObject with If-None-Match (no 100 Continue),
    # checked by its answer
    "ftp": {"net round_trips": 8, "net connections": 0, "net ftp data connections": 1, "fsyncs": 4,
            "fsync ledger wal": 1.5, "fsync staging": 2.5, "ledger finish": 2, "ledger checkpoint": 0},
    "sftp": {"net round_trips": 11, "net connections": 0},
    "s3": {"net round_trips": 1, "net connections": 0},
}


@pytest.mark.parametrize("case", sorted(BOUNDS))
def test_one_small_file_costs_no_more_than_today(tmp_path, case):
    if shutil.which("strace") is None:
        pytest.fail("strace is missing: apt-get install -y strace (it is in the Makefile's TEST_APT_PACKAGES)")
    with per_file_costs.case_setup(case, str(tmp_path)) as (proxy, configure, extra):
        few = per_file_costs.run_once(case, proxy, configure, extra, str(tmp_path), 2, 20_000, timeout=120)
        many = per_file_costs.run_once(case, proxy, configure, extra, str(tmp_path), 6, 20_000, timeout=120)
    costs = per_file_costs.per_file(few, many, 4)
    over = {metric: costs.get(metric, 0) for metric, bound in BOUNDS[case].items() if costs.get(metric, 0) > bound}
    assert not over, f"{case}: per file {over}, more than {BOUNDS[case]}"
