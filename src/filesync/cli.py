"""`filesync status|ls|retry ID|forget ID|audit TARGET`: look at filesync and act on single files, on ROS 1
(`rosrun filesync filesync ...`) or ROS 2 (the `filesync` the ROS 2 package installs).

It talks to the ledger's services and listens to /filesync/status, through the generation's client side
(filesync.ros.cli_backend or filesync.ros2.cli_backend: ROS_VERSION says which, else the one whose client library
imports, ROS 1's first). Every wait has a short timeout: with no ROS master, no ledger or no status node it prints one
line saying which, and exits 1 (audit: 2), instead of hanging.
`audit` (filesync.audit) can also run without ROS: `--config FILE --database PATH` read both from files.
"""
import argparse
import importlib
import os
import sys
import threading
import time

from filesync.audit import CannotAudit, audit, exit_status, read_ledger_file, target_options
from filesync.config import load_config_file
from filesync.devices import create_target
from filesync.errors import ConfigError
from filesync.ros_common.generation import running_generation
from filesync.status import FILE_STATES, format_status, human_bytes

LEDGER = "/filesync/ledger"
STATUS_TOPIC = "/filesync/status"
# states in the order a person wants to read them: what needs a person first, then what moves, then what is done
LS_ORDER = ("failed", "downloading", "uploading", "found", "downloaded", "skipped", "uploaded", "removed")
PAGE = 1000


class Unavailable(Exception):
    """The master, the ledger or the status node does not answer; the message says which."""


def ros_backend():
    """The client side of the ROS generation filesync runs on (see the module's docstring)."""
    ros1 = running_generation() == "1"
    return importlib.import_module("filesync.ros.cli_backend" if ros1 else "filesync.ros2.cli_backend")


def call_with_timeout(function, timeout, what, errors=(OSError,)):
    """Run function() in a thread and return its result; raise Unavailable if it takes longer than `timeout` or fails
    with one of `errors` (the ROS client's "did not answer")."""
    result = {}

    def run():
        try:
            result["value"] = function()
        except Exception as error:  # handed to the caller's thread below
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise Unavailable(f"{what} did not answer within {timeout:g} s")
    if "error" in result:
        error = result["error"]
        if isinstance(error, errors):
            raise Unavailable(f"{what} failed: {error}")
        raise error
    return result["value"]


def command_ls(args, out, ros):
    """List files grouped by state (what needs a person first), with size, attempts and the last error."""
    ledger = ros.LedgerClient(args.timeout)
    files = ledger.files(args.state, args.source, args.limit)
    order = {state: index for index, state in enumerate(LS_ORDER)}
    files.sort(key=lambda f: (order.get(f.state, len(order)), f.id))
    if not files:
        out.write("no files" + (f" in state {args.state}" if args.state else "") + "\n")
        return 0
    out.write(f"{'ID':>7}  {'STATE':<11}  {'SOURCE':<10}  {'SIZE':>10}  PATH\n")
    for record in files:
        line = f"{record.id:>7}  {record.state:<11}  {record.source:<10}  {human_bytes(record.size):>10}  {record.path}"
        if record.version > 1:  # another version of the same name came before: say which, and where this one went
            line += f"  [version {record.version}"
            renamed = [t.location for t in record.tasks if t.kind == "upload" and t.location
                       and not t.location.endswith(record.path)]
            line += f" -> {', '.join(renamed)}]" if renamed else "]"
        if record.error:
            line += f"  ({record.error})"
        out.write(line + "\n")
    totals = {}
    for record in files:
        totals[record.state] = totals.get(record.state, 0) + 1
    out.write(f"{len(files)} file(s): " + ", ".join(f"{state} {totals[state]}" for state in LS_ORDER
                                                    if state in totals) + "\n")
    return 0


def command_manage(args, out, ros):
    """retry ID or forget ID."""
    ledger = ros.LedgerClient(args.timeout)
    ok, message, record = ledger.manage(args.command, args.id)
    if ok and args.command == "retry":
        message += f" (now {record.state}: {record.path})"
    out.write(message + "\n")
    return 0 if ok else 1


def command_status(args, out, ros):
    """Print the status once (--once) or redraw it on every message until Ctrl-C."""
    latest = {}
    arrived = threading.Event()

    def on_status(message):
        latest["status"], latest["received"] = message, time.monotonic()
        arrived.set()

    stop_watching = ros.watch_status(on_status)
    try:
        if not arrived.wait(args.timeout):
            raise Unavailable(f"no status on {STATUS_TOPIC} within {args.timeout:g} s: is the status node "
                              "(sync.launch) running?")
        redraw = out.isatty() and not args.once
        while True:
            arrived.clear()
            status = latest["status"]
            text = format_status(status, width=_terminal_width())
            age = time.monotonic() - latest["received"]
            if age > 3:
                text += f"\n(no new status for {age:.0f} s)"
            out.write(("\x1b[H\x1b[2J" if redraw else "") + text + "\n")
            if not redraw and not args.once:
                out.write("\n")
            out.flush()
            if args.once:
                return 0
            arrived.wait(2.0)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_watching()


def command_audit(args, out, ros):
    """Check that TARGET still holds every version the ledger says it received; one line per problem, a summary,
    and the exit status 0 (all there), 1 (problems) or 2 (cannot check). `ros`: None when both come from files."""
    if args.config:
        config = load_config_file(args.config)
    else:
        ros.check(args.timeout)
        config = ros.config(args.timeout)
    target = create_target(args.target, target_options(config, args.target))
    try:
        if args.database:
            records = read_ledger_file(args.database, args.target)
        else:
            ros.check(args.timeout)
            records = ros.LedgerClient(args.timeout).files()
        report = audit(target, records, config.staging_dir, read_back=args.read_back)
    finally:
        target.close()
    if args.json:
        out.write(report.as_json() + "\n")
    else:
        for problem in report.problems:
            out.write(problem.line() + "\n")
        out.write(report.summary() + "\n")
    return exit_status(report)


def _terminal_width():
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


DESCRIPTION = """\
Look at filesync and act on single files. filesync moves files from sources (a PX4 over MAVLink
FTP or MAVROS, FTP, SFTP, HTTP, drives, folders) through staging to targets, verifies each copy
on its target, never overwrites, and removes a source file only once every target holds a
verified copy. This tool talks to its nodes on ROS 1 (`rosrun filesync filesync`) or ROS 2
(`ros2 run filesync filesync`; ROS_VERSION picks when both are installed)."""
EPILOG = """\
Exit status: 0 done, 1 something did not answer or refused, 2 bad usage (audit: see its help).
The nodes, topics and services: docs/nodes.md; what each view shows: docs/operating.md."""
STATUS = """\
A live view of /filesync/status, redrawn as each status arrives (about once a second) until
Ctrl-C: files and bytes waiting per pipeline, every transfer in progress with a progress bar,
rate and ETA, each source's and target's link state, parked files and the last error. The same
content as the rqt plugin and the web page (http://127.0.0.1:8088/ by default)."""
LS = """\
List the ledger's files grouped by state, what needs a person first (failed, then what moves,
then what is done), one line each: id, state, source, size and path; a later version of a name
says `[version N -> where it went]`, a parked or skipped file its reason. Then the counts."""
RETRY = """\
Put a parked (failed) file back in line: its parked tasks wait again, with their attempts
counted from zero, and the workers are woken. Find the id with `filesync ls failed`."""
FORGET = """\
Drop a file from the ledger, with its staged copy and its unfinished uploads (an open S3
multipart upload is aborted). If its source still holds it, the finder lists it again and it
travels again as a new version."""
AUDIT = """\
Check that TARGET still holds every version the ledger says it delivered there: its size, and
the target's own digest where it offers one (FTP HASH, S3's checksum or the object read back,
SFTP's sha256sum with remote_sha256), compared with the version's SHA-256. Prints one line per file missing or
different, then a summary. Without ROS: --config FILE --database PATH."""


def parser():
    """The argument parser (each command's help fits one screen of 100 columns; test/test_cli_help.py)."""
    main = argparse.ArgumentParser(prog="filesync", description=DESCRIPTION, epilog=EPILOG)
    main.add_argument("--timeout", type=float, help="seconds to wait for an answer (default 3 on ROS 1; 10 on ROS 2, "
                      "whose discovery takes seconds on a busy computer)")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="live view: counts, transfers with progress, links",
                                 description=STATUS)
    status.add_argument("--once", action="store_true", help="print one status and exit")
    ls = commands.add_parser("ls", help="list files by state", description=LS)
    ls.add_argument("state", nargs="?", default="", choices=("",) + FILE_STATES, metavar="STATE",
                    help=f"only this state ({', '.join(FILE_STATES)})")
    ls.add_argument("--source", default="", help="only files of this source")
    ls.add_argument("--limit", type=int, default=0, help="at most this many files (0: all)")
    for name, text, description in (
            ("retry", "put a parked (failed) file back in line", RETRY),
            ("forget", "drop a file and its staged copy (found again if its source still has it)", FORGET)):
        command = commands.add_parser(name, help=text, description=description)
        command.add_argument("id", type=int, help="the file's id (see `filesync ls`)")
    audit_command = commands.add_parser(
        "audit", help="check that a target still holds what the ledger says it received", description=AUDIT,
        epilog="Exit status: 0 all there, 1 problems found, 2 cannot check (target unreachable, bad configuration).")
    audit_command.add_argument("target", help="the target's name in the configuration")
    audit_command.add_argument("--json", action="store_true", help="print the report as JSON")
    audit_command.add_argument("--config", default="", metavar="FILE",
                               help="the YAML configuration (default: the one the nodes run with)")
    audit_command.add_argument("--database", default="", metavar="PATH",
                               help="read this ledger file directly, read-only, without ROS (default: the ledger "
                                    "node's query service)")
    audit_command.add_argument("--read-back", action="store_true",
                               help="read every file back and compare its SHA-256 (default: the target's digest, "
                                    "or size only where it has none)")
    return main


def main(argv=None, out=None):
    """Run the tool; returns the exit code (0 done, 1 something did not answer or refused, 2 bad usage)."""
    out = out or sys.stdout
    args = parser().parse_args(argv)
    if args.command == "audit":
        ros = None if args.config and args.database else ros_backend()
        if ros is not None and args.timeout is None:
            args.timeout = ros.DEFAULT_TIMEOUT
        try:
            return command_audit(args, out, ros)
        except (Unavailable, CannotAudit, ConfigError) as error:
            sys.stderr.write(f"filesync audit: {error}\n")
            return exit_status(None)
        finally:
            if ros is not None:
                ros.close()
    ros = ros_backend()
    if args.timeout is None:
        args.timeout = ros.DEFAULT_TIMEOUT
    try:
        ros.check(args.timeout)
        if args.command == "status":
            return command_status(args, out, ros)
        if args.command == "ls":
            return command_ls(args, out, ros)
        return command_manage(args, out, ros)
    except Unavailable as error:
        sys.stderr.write(f"filesync: {error}\n")
        return 1
    finally:
        ros.close()
