"""The command-line tool against the ROS 2 nodes (under `filesync-ros2 run`), as a process, as a person runs it:
ls, status, retry, forget and audit, and one clear line when nothing answers."""
import os
import subprocess
import sys

from support.ros2_stack import all_uploaded, wait_for, write_inbox
from support.ros2_stack import scene, test_node  # noqa: F401 - fixtures


def filesync(*args, timeout=60):
    """Run `filesync ARGS` on ROS 2; (exit code, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-c", "import sys; from filesync.cli import main; sys.exit(main())",
                             *args], capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, ROS_VERSION="2"))
    return result.returncode, result.stdout, result.stderr


def test_nothing_running_is_one_clear_line_and_no_hang():
    code, out, err = filesync("--timeout", "1", "ls")
    assert (code, out) == (1, "")
    assert err == "filesync: the ledger (/filesync/ledger/query) does not answer: is filesync-ros2 (or " \
                  "sync.launch.py) running?\n"


def test_ls_status_retry_forget_and_audit(scene):
    scene.stack.start()
    paths = write_inbox(scene, [1000, 2000])
    records = wait_for(lambda: all_uploaded(scene, len(paths)), 120, "not every file uploaded")
    code, out, err = filesync("ls")
    assert code == 0, err
    assert out.splitlines()[-1] == "2 file(s): uploaded 2" and all(path in out for path in paths), out
    code, out, err = filesync("status", "--once")
    assert code == 0 and out.startswith("inbox -> ftp: uploaded 2\n"), (out, err)
    first = records[0]
    code, out, err = filesync("retry", str(first.id))
    assert code == 0 and out == f"file {first.id} is back in line (now uploaded: {first.path})\n", (out, err)
    code, out, err = filesync("forget", str(first.id))
    assert code == 0 and out == f"file {first.id} forgotten\n", (out, err)
    code, out, err = filesync("forget", "999")
    assert (code, out) == (1, "no file 999\n"), err
    # the audit reads the configuration through the ledger node's `config` parameter
    code, out, err = filesync("audit", "ftp")
    assert code == 0, (out, err)
    assert out.splitlines()[-1].startswith("audit of ftp: "), out
