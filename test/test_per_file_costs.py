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
# The ledger's 4 transactions a file (claim and finish, twice) plus half a transaction: timing gives one of the two
# runs a commit more now and then (0.25 a file here; e.g. the finder registering over one more scan), and LocalRunner's
# group commit takes some away.
BOUNDS = {
    "folder": {"fsyncs": 9.5, "fsync ledger wal": 4.5, "fsync staging": 3, "fsync target": 2, "ledger finish": 2,
               "ledger checkpoint": 0},
    # ftp: SIZE final, SIZE .part, PASV, STOR, SIZE .part, SIZE final, RNFR, RNTO, SIZE final (TYPE I once per
    # connection); sftp: stat final and .part, open, writes, fsync, close, stat .part and final, rename, stat (plus
    # an SSH window adjustment now and then); s3: PutObject with If-None-Match (no 100 Continue), one HeadObject
    "ftp": {"net round_trips": 9, "net connections": 0, "net ftp data connections": 1, "fsyncs": 7.5,
            "fsync ledger wal": 4.5, "fsync staging": 3, "ledger finish": 2, "ledger checkpoint": 0},
    "sftp": {"net round_trips": 11, "net connections": 0},
    "s3": {"net round_trips": 2, "net connections": 0},
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
