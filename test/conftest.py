"""Fixtures shared by the library tests."""
import fcntl
import os
import tempfile

import pytest

from support.ftp_server import FtpServerProcess

# test/ros2: filesync on ROS 2, run by `make test-ros2` in the ROS 2 venv with filesync_interfaces built (it sets
# FILESYNC_ROS2=1 and the paths); under ROS 1's venv they are not collected (rclpy is not there, and must not be).
# Each run gets a DDS domain of its own and keeps discovery on this machine, so two runs never see each other's nodes
# and nothing leaves 127.0.0.1. The domain is the first of 1..100 whose lock file no other run holds (a domain from the
# pid collided now and then when several runs shared the machine: a ledger answering another run's workers).
# ROS_PYTHON_CHECK_FIELDS=1 makes every message field assignment check its type, so a wrong type fails in the tests.


def _own_domain():
    """A ROS_DOMAIN_ID no other test run on this machine holds; its lock is held until this process ends."""
    for domain in range(1, 101):  # valid domain ids, not the default 0
        handle = open(os.path.join(tempfile.gettempdir(), f"filesync-ros-domain-{domain}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _own_domain.lock = handle  # kept open: closing it would free the domain
        return domain
    raise RuntimeError("all 100 ROS 2 test domains are held by other runs")


if os.environ.get("FILESYNC_ROS2") == "1":
    os.environ["ROS_DOMAIN_ID"] = str(_own_domain())
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_PYTHON_CHECK_FIELDS"] = "1"
else:
    collect_ignore = ["ros2"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed ROS 2 test shows the last lines of the logs in its tmp_path (the supervisor's, the stand-ins' and
    servers', nodes/*.log: each node's): the processes are gone by the time anyone looks."""
    report = (yield).get_result()
    workdir = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    if report.when != "call" or not report.failed or os.environ.get("FILESYNC_ROS2") != "1" or workdir is None:
        return
    logs = sorted(workdir.glob("*.log")) + sorted(workdir.glob("nodes/*.log"))
    for path in logs:
        with open(path, encoding="utf-8", errors="replace") as handle:
            tail = handle.readlines()[-25:]
        report.sections.append((f"last lines of {path.relative_to(workdir)}", "".join(tail)))


@pytest.fixture(autouse=True)
def s3_stores_found_anew():
    """A test's S3 servers are its own, and another engine may get a port an earlier test's server had: what the s3
    target found about an endpoint (kept per process) must not carry over to the next test."""
    from filesync.devices.s3.store import forget_stores
    forget_stores()


@pytest.fixture
def ftp_server(tmp_path):
    """A real pyftpdlib server on 127.0.0.1, serving tmp_path/ftp_root, logging to tmp_path/ftp.log."""
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def write_file(path, size, seed=0):
    """Write `size` bytes of deterministic content to `path` (made of 1 MiB blocks, memory stays small)."""
    import random
    os.makedirs(os.path.dirname(path), exist_ok=True)
    generator = random.Random(f"{seed}:{path}:{size}")
    with open(path, "wb") as handle:
        left = size
        while left:
            block = min(left, 1 << 20)
            handle.write(generator.randbytes(block))
            left -= block


def write_file_whole(path, size, seed=0):
    """write_file under a hidden name beside `path` (sources skip dot files by default), then renamed into place: a
    scan never lists it half written (with min_age 0 that would be a version of its own)."""
    hidden = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    write_file(hidden, size, seed)
    os.replace(hidden, path)


def assert_config_error(build, key, text=""):
    """`build()` raises ConfigError in one line that starts with `key:` and holds `text`; returns the message."""
    from filesync.errors import ConfigError
    with pytest.raises(ConfigError) as raised:
        build()
    message = str(raised.value)
    assert message.startswith(key + ":") and text in message and "\n" not in message, message
    return message
