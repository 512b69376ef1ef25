"""A short soak on every CI run: kill -9 of the launch's nodes, FTP server restarts and a full staging disk while
files flow folder -> FTP through roslaunch; every file must arrive once and identical, and nothing be deleted early.

The full one is `make soak` (20 minutes). A failure names the seed; replay it with
`.venv/bin/python test/support/soak.py --minutes 3 --seed N` in the workspace's environment.
"""
import os
import random
import shutil
import subprocess

import pytest

from support.soak import run_soak

SEED = int(os.environ.get("FILESYNC_SOAK_SEED", random.SystemRandom().randrange(1 << 31)))


def _ros_workspace_sourced():
    """roslaunch can find the filesync package (the catkin workspace's devel space is sourced)."""
    if not (shutil.which("roslaunch") and shutil.which("rospack")):
        return False
    return subprocess.run(["rospack", "find", "filesync"], capture_output=True, timeout=60).returncode == 0


@pytest.mark.skipif(not _ros_workspace_sourced(), reason="needs the catkin workspace sourced (make test does that)")
def test_short_soak_every_file_arrives_once_identical_and_nothing_is_deleted_early(tmp_path):
    lines = []
    figures, failures = run_soak(str(tmp_path), SEED, inject_seconds=80, kills=30, restarts=5, fills=3,
                                 settle_seconds=60, files_per_second=1.0, log=lines.append)
    print("\n".join(lines))
    assert not failures, f"seed {SEED} (FILESYNC_SOAK_SEED={SEED} to replay): {failures}"
    assert figures["kills"] >= 25 and figures["ftp_restarts"] == 5, figures
    assert figures["deletions_seen"] > 0, figures
