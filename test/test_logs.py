"""Bounded logs: filesync's own rotating file, rospy's per-node file swapped for a bounded one, and the ROS log
directory capped by total size, each under a flood of errors."""
import logging
import os
import subprocess
import sys
import threading
import time

from filesync.logs import prune_logs, setup_file_logging

HERE = os.path.dirname(os.path.abspath(__file__))


def sizes(directory):
    return {name: os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)}


def test_a_flood_of_errors_stays_under_the_configured_size(tmp_path):
    log_dir = tmp_path / "logs"
    handler = setup_file_logging(str(log_dir), "/filesync/uploader", max_bytes=20_000, backup_count=2,
                                 logger_name="filesync.test_flood")
    logger = logging.getLogger("filesync.test_flood")
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def flood(thread):
        for index in range(3000):
            logger.error("upload %d.%d failed: 421 Too many connections from this IP; retrying in 2.0 s", thread,
                         index)

    try:
        threads = [threading.Thread(target=flood, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        logger.error("the very last error")
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sizes(log_dir)
    # 12,000 lines of about 100 bytes were written; only the newest 3 x 20 kB are kept
    assert set(files) == {"filesync_uploader.log", "filesync_uploader.log.1", "filesync_uploader.log.2"}, files
    assert all(size <= 20_000 for size in files.values()), files
    assert sum(files.values()) > 40_000  # it did rotate, rather than stop writing
    assert "the very last error" in (log_dir / "filesync_uploader.log").read_text()


def test_rospys_per_node_file_is_swapped_for_a_bounded_one(tmp_path):
    """In a fresh process, as a node starts: rospy's logging config (50 MB x 4 per process) and then ours."""
    script = (
        "import logging, rosgraph.roslogging as r\n"
        "from filesync.logs import replace_ros_file_handler\n"
        "path = r.configure_logging('flood')\n"
        "print(path, flush=True)\n"
        "assert replace_ros_file_handler(30000, 1) is not None\n"
        "log = logging.getLogger('rosout')\n"
        "for i in range(5000):\n"
        "    log.error('could not reach the ftp server, attempt %d: [Errno 111] Connection refused', i)\n")
    environment = dict(os.environ, ROS_LOG_DIR=str(tmp_path / "ros"), ROS_HOME=str(tmp_path / "home"),
                       PYTHONPATH=os.pathsep.join([os.path.join(HERE, "..", "src"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    files = sizes(tmp_path / "ros")
    base = os.path.basename(result.stdout.split()[0])
    assert set(files) == {base, base + ".1"}, files
    assert all(size <= 30_000 for size in files.values()), files


def test_prune_caps_the_ros_log_directory_keeping_open_and_fresh_files(tmp_path):
    root = tmp_path / "log"
    now = time.time()
    written = []
    for run in range(6):  # six old roslaunch runs, each with node logs from several respawns
        for node in range(4):
            path = root / f"run-{run}" / f"uploader-{1000 + node}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 50_000)
            age = now - 3600 * (10 - run) - node
            os.utime(path, (age, age))
            written.append(path)
    fresh = root / "run-6" / "rosout.log"
    fresh.parent.mkdir()
    fresh.write_bytes(b"y" * 50_000)
    held = written[0]  # the oldest file, but a process still writes it
    (root / "latest").symlink_to(root / "run-6")
    holder = subprocess.Popen([sys.executable, "-c", f"import time; f = open({str(held)!r}, 'a'); time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while str(held) not in {os.readlink(f"/proc/{holder.pid}/fd/{fd}") for fd in os.listdir(
                f"/proc/{holder.pid}/fd")}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        freed = prune_logs(str(root), max_total_bytes=400_000, now=now)
    finally:
        holder.kill()
        holder.wait()
    left = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]
    total = sum(os.path.getsize(p) for p in left)
    assert total <= 400_000 + 50_000  # the budget, plus the open file it may not free
    assert freed == 25 * 50_000 - total
    assert held.exists() and fresh.exists()
    assert (root / "run-5" / "uploader-1000.log").exists()  # the newest old files stay
    assert not (root / "run-1").exists()  # emptied run directories go
    assert prune_logs(str(root), max_total_bytes=10_000_000) == 0
