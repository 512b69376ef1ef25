"""Log files that cannot fill the disk, however long the system runs and however often a node restarts.

Three kinds of file, three bounds:
- filesync's own log (the "filesync" logger: every retry, link change and error): one file per node name, rotated at
  log_max_bytes with log_backup_count old files. Named by node, not by process id, so a respawned node appends to the
  same rotation instead of starting a new file.
- rospy's per-node file (ROS_LOG_DIR/<run>/<node>-<pid>.log): rospy configures a RotatingFileHandler of 50 MB x 4 per
  process, and a new one per process id, per roslaunch run. replace_ros_file_handler() swaps it for one with our
  bounds; prune_logs() then caps the whole ROS log directory (old runs, old pids, rosout.log backups) by total size.
- roscore's own files (master.log, rosout.log, rotated by rosout at 100 MB) fall under prune_logs() too.
"""
import logging
import logging.handlers
import os
import time

import psutil

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def library_file_handler(log_dir, node_name, max_bytes, backup_count):
    """A RotatingFileHandler for <log_dir>/<node_name>.log that keeps at most (1 + backup_count) * max_bytes."""
    os.makedirs(log_dir, exist_ok=True)
    name = node_name.strip("/").replace("/", "_") or "filesync"
    handler = logging.handlers.RotatingFileHandler(os.path.join(log_dir, f"{name}.log"), maxBytes=max_bytes,
                                                   backupCount=backup_count, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def setup_file_logging(log_dir, node_name, max_bytes, backup_count, logger_name="filesync"):
    """Send `logger_name` (filesync's library logs) to its bounded rotating file; returns the handler."""
    handler = library_file_handler(log_dir, node_name, max_bytes, backup_count)
    logging.getLogger(logger_name).addHandler(handler)
    return handler


def replace_ros_file_handler(max_bytes, backup_count):
    """Swap rospy's file handler (50 MB x 4 per process) on the root logger for one with these bounds.

    Returns the new handler, or None when rospy logs to no file (its logging config was not found or names none).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            bounded = logging.handlers.RotatingFileHandler(handler.baseFilename, maxBytes=max_bytes,
                                                           backupCount=backup_count, encoding="utf-8")
            bounded.setLevel(handler.level)
            bounded.setFormatter(handler.formatter)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(bounded)
            return bounded
    return None


def _open_files():
    """Paths of files some process we may inspect has open (their space is not freed by deleting them)."""
    paths = set()
    for process in psutil.process_iter():
        try:
            paths.update(entry.path for entry in process.open_files())
        except (psutil.Error, OSError):
            continue
    return paths


def prune_logs(log_dir, max_total_bytes, keep_newer_than=60.0, now=None):
    """Delete the oldest files under `log_dir` until the total is at most max_total_bytes; return the bytes freed.

    Files a process still has open, and files changed in the last `keep_newer_than` seconds, are kept (deleting
    them would free nothing or lose what is being written); emptied directories are removed.
    """
    if not os.path.isdir(log_dir):
        return 0
    now = time.time() if now is None else now
    files = []
    for directory, _, names in os.walk(log_dir):
        for name in names:
            path = os.path.join(directory, name)
            try:
                stat = os.lstat(path)
            except OSError:
                continue
            if not os.path.islink(path):
                files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    if total <= max_total_bytes:
        return 0
    busy = _open_files()
    freed = 0
    for mtime, size, path in sorted(files):
        if total - freed <= max_total_bytes:
            break
        if path in busy or now - mtime < keep_newer_than:
            continue
        try:
            os.remove(path)
            freed += size
        except OSError:
            continue
    for directory, _, _ in os.walk(log_dir, topdown=False):
        if directory != log_dir and not os.listdir(directory):
            try:
                os.rmdir(directory)
            except OSError:
                pass
    return freed
