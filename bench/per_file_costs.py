"""What one small file costs on each device, counted: round trips, fsyncs and ledger calls (issue 18, items 2 and 3).

For each case a LocalRunner (test/support/run_local.py's way: one process, the whole pipeline) moves first --few and
then --many files of --size bytes, each run in a fresh staging folder and ledger:
- round trips and connections: network devices are reached through test/support/latency_proxy.py with no delay,
  which counts them (a round trip is a turn of the data from client -> server to server -> client on a connection).
  FTP's data connections go straight to the server (PASV names the server's port): each costs a TCP handshake
  that is not counted; the control connection's turns are.
- fsyncs: the runner runs under `strace -f -y -e trace=fsync,fdatasync`; each call is sorted by the file it synced:
  the ledger (SQLite in WAL mode with synchronous=FULL fsyncs its -wal file once per commit, so those are the ledger's
  write transactions), staging, the target's folder, or other.
- ledger calls: every Ledger method called from the loops' threads (the harness's own polling is not counted); a
  batch of small files claimed (claim_batch) or recorded (finish_batch) together is one call.
Per file = (count with --many files - count with --few) / (many - few), so fixed costs (logins, the first listing,
connections opened once) cancel out.

Run in the catkin workspace's environment (as `make bench` does; the FTP server needs its Python path):
  .venv/bin/python bench/per_file_costs.py [--only folder,ftp,sftp,s3,http,drive,ftp-source,sftp-source]
                                           [--few 5] [--many 25] [--size 20000]
The child mode (--child CONFIG OUT) is what the runs call under strace.
"""
import argparse
import collections
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test"))
try:
    import filesync.msg  # noqa: F401  (the workspace's filesync, with its messages)
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "src"))

CASES = ("folder", "ftp", "sftp", "s3", "http", "drive", "ftp-source", "sftp-source")
FSYNC_LINE = re.compile(r"^\d+\s+(?:fsync|fdatasync)\((\d+)<([^>]*)>")  # a call, finished or <unfinished ...>


def make_files(folder, count, size, seed=0):
    """`count` files of `size` random bytes in `folder` (f00000.bin ...), each written whole under a temporary name."""
    os.makedirs(folder, exist_ok=True)
    generator = random.Random(seed)
    names = []
    for index in range(count):
        name = f"f{index:05d}.bin"
        temporary = os.path.join(folder, f".{name}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(generator.randbytes(size))
        os.rename(temporary, os.path.join(folder, name))
        names.append(name)
    return names


def base_config(run_dir):
    """A pipeline's common part: its own staging and ledger under `run_dir`, default intervals."""
    return {"staging_dir": os.path.join(run_dir, "staging"), "database": os.path.join(run_dir, "db", "ledger.db")}


def proxied_known_hosts(server, port, path):
    """A known_hosts file naming `server`'s host key at 127.0.0.1:`port` (the proxy's port, which the client dials)."""
    with open(server.host_key + ".pub") as handle:
        kind, key = handle.read().split()[:2]
    with open(path, "w") as handle:
        handle.write(f"[127.0.0.1]:{port} {kind} {key}\n")
    return path


# The peers: each yields (proxy or None, function(run_dir, count, size) -> config) -----------------------------------

@contextlib.contextmanager
def ftp_peer(workdir):
    from support.ftp_server import FtpServerProcess
    from support.latency_proxy import LatencyProxy
    from support.launch import quiet_stderr
    server = FtpServerProcess(os.path.join(workdir, "ftp_root"), os.path.join(workdir, "ftp.log"))
    with quiet_stderr(os.path.join(workdir, "ftp_server.log")):
        server.start()
    try:
        with LatencyProxy(server.port, 0) as proxy:
            yield server, {**server.target_options("/"), "port": proxy.port}, proxy
    finally:
        server.stop()


@contextlib.contextmanager
def sftp_peer(workdir):
    from support.latency_proxy import LatencyProxy
    from support.sshd import Sshd
    server = Sshd(os.path.join(workdir, "sshd")).start()
    try:
        with LatencyProxy(server.port, 0) as proxy:
            known_hosts = proxied_known_hosts(server, proxy.port, os.path.join(workdir, "sshd", "known_hosts.proxy"))
            yield server, server.options(auth="key", port=proxy.port, known_hosts=known_hosts), proxy
    finally:
        server.remove()


@contextlib.contextmanager
def s3_peer(workdir):
    from support.latency_proxy import LatencyProxy
    from support.seaweedfs import SeaweedS3
    server = SeaweedS3(os.path.join(workdir, "s3")).start()
    try:
        with LatencyProxy(server.ports["s3.port"], 0) as proxy:
            yield server, server.target_options(endpoint_url=f"http://127.0.0.1:{proxy.port}"), proxy
    finally:
        server.remove()


@contextlib.contextmanager
def http_peer(workdir):
    from support.http_sink import SinkServer
    from support.latency_proxy import LatencyProxy
    server = SinkServer(os.path.join(workdir, "http"))
    port = int(server.url.rsplit(":", 1)[1])
    try:
        with LatencyProxy(port, 0) as proxy:
            yield server, {"kind": "http", "url": f"http://127.0.0.1:{proxy.port}/files/{{path}}"}, proxy
    finally:
        server.stop()


@contextlib.contextmanager
def drive_peer(workdir):
    from support.exfat_drive import exfat_drive, missing_tools, unavailable_reason, unique_label, unique_serial
    reason = unavailable_reason() or (f"missing {' '.join(missing_tools())}" if missing_tools() else None)
    if reason:
        raise Unavailable(reason)
    with exfat_drive(workdir, unique_label(), unique_serial(), size_mb=256) as drive:
        drive.attach()
        drive.mount(os.path.join(workdir, "media"))
        yield drive, {"kind": "drive", "uuid": drive.uuid}, None


class Unavailable(Exception):
    """A case that cannot run on this machine (the reason is printed instead of figures)."""


def folder_source(run_dir, count, size):
    inbox = os.path.join(run_dir, "inbox")
    make_files(inbox, count, size)
    return {"kind": "folder", "path": inbox, "min_age": 0.0}


@contextlib.contextmanager
def case_setup(case, workdir):
    """Yield (proxy, configure(run_dir, count, size) -> config, extra() -> {name: count so far}) for `case`.

    extra() counts what the proxy cannot see: FTP's data connections (one per STOR or RETR, from the server's log).
    """
    if case == "folder":
        def configure(run_dir, count, size):
            out = os.path.join(run_dir, "out")
            os.makedirs(out)
            return {**base_config(run_dir), "sources": {"in": folder_source(run_dir, count, size)},
                    "targets": {"out": {"kind": "folder", "path": out}}}
        yield None, configure, dict
        return
    if case.endswith("-source"):
        peer = {"ftp-source": ftp_peer, "sftp-source": sftp_peer}[case]
        with peer(workdir) as (server, options, proxy):
            storage = server.root if case == "ftp-source" else server.storage

            def configure(run_dir, count, size):
                folder = os.path.basename(run_dir)
                make_files(os.path.join(storage, folder), count, size)
                if case == "sftp-source":
                    server.own(os.path.join(storage, folder))
                    root = os.path.join(storage, folder)
                else:
                    root = "/" + folder
                out = os.path.join(run_dir, "out")
                os.makedirs(out)
                return {**base_config(run_dir), "sources": {"in": {**options, "root": root}},
                        "targets": {"out": {"kind": "folder", "path": out}}}
            yield proxy, configure, ftp_data_connections(server) if case == "ftp-source" else dict
        return
    peer = {"ftp": ftp_peer, "sftp": sftp_peer, "s3": s3_peer, "http": http_peer, "drive": drive_peer}[case]
    with peer(workdir) as (server, options, proxy):
        def configure(run_dir, count, size):
            folder = os.path.basename(run_dir)
            target = dict(options)
            if case == "ftp":
                target["root"] = "/" + folder
            elif case == "sftp":
                target["root"] = os.path.join(server.storage, folder)
            elif case == "s3":
                target["key_template"] = folder + "/{path}"
            elif case == "http":
                target["url"] = target["url"].replace("/files/", f"/files/{folder}/")
            elif case == "drive":
                target["root"] = folder
            return {**base_config(run_dir), "sources": {"in": folder_source(run_dir, count, size)},
                    "targets": {"out": target}}
        yield proxy, configure, ftp_data_connections(server) if case == "ftp" else dict


def ftp_data_connections(server):
    """extra() for an FTP peer: data connections opened for STOR and RETR so far."""
    return lambda: {"ftp data connections": len(server.events("STOR")) + len(server.events("RETR"))}


# One run ------------------------------------------------------------------------------------------------------------

def run_once(case, proxy, configure, extra, workdir, count, size, timeout):
    """Move `count` files in a child process under strace; returns the counts."""
    run_dir = os.path.join(workdir, f"{case}-{count}")
    os.makedirs(run_dir)
    config = configure(run_dir, count, size)
    config["pipelines"] = [{"source": "in", "targets": ["out"]}]
    # one transfer per device: with several, the fixed costs of each worker (its connection, its login) grow with
    # the number of files up to `transfers` and no longer cancel out between the two runs
    for device in (config["sources"]["in"], config["targets"]["out"]):
        device["transfers"] = 1
    config_path, out_path = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "counts.json")
    trace_path = os.path.join(run_dir, "fsync.trace")
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    if proxy is not None:
        proxy.reset_stats()
    extra_before = extra()
    command = ["strace", "-f", "-y", "-qq", "--seccomp-bpf", "-e", "trace=fsync,fdatasync", "-o", trace_path,
               sys.executable, os.path.abspath(__file__), "--child", config_path, out_path]
    subprocess.run(command, check=True, timeout=timeout)
    with open(out_path) as handle:
        counts = json.load(handle)
    if counts["uploaded"] != count:
        raise RuntimeError(f"{case}: {counts['uploaded']} of {count} files arrived; see {run_dir}")
    fsyncs = collections.Counter()
    with open(trace_path) as handle:
        for line in handle:
            found = FSYNC_LINE.match(line)
            if found:
                fsyncs[classify(found.group(2), config)] += 1
    counts["fsyncs"] = dict(fsyncs)
    counts["network"] = proxy.stats() if proxy is not None else {}
    counts["network"].update({name: value - extra_before.get(name, 0) for name, value in extra().items()})
    return counts


def classify(path, config):
    """Which part of the pipeline an fsynced path belongs to."""
    database_dir = os.path.dirname(config["database"])
    if path.startswith(database_dir):
        return "ledger wal" if path.endswith("-wal") else "ledger other"
    if path.startswith(config["staging_dir"]):
        return "staging"
    target = config["targets"]["out"]
    if target["kind"] == "folder" and path.startswith(target["path"]):
        return "target"
    if target["kind"] == "drive" and "/media" in path:
        return "target"
    return "other"


def child(config_path, out_path):
    """Run the pipeline of `config_path` until settled, counting the loops' ledger calls; write the counts."""
    from filesync.engine.runner import LocalRunner
    with open(config_path) as handle:
        config = json.load(handle)
    runner = LocalRunner(config)
    calls = collections.Counter()
    main = threading.main_thread()
    inside = threading.local()  # a call the ledger makes to itself (claim -> claim_batch) is not the loops' call
    ledger = runner.ledger
    for name in ("register", "register_staged", "claim", "claim_batch", "checkpoint", "finish", "finish_batch",
                 "retry", "forget", "get", "find", "versions", "files", "work_left", "counts", "bytes_to_copy"):
        method = getattr(ledger, name)

        def counted(*args, _method=method, _name=name, **kwargs):
            if threading.current_thread() is not main and not getattr(inside, "depth", 0):
                calls[_name] += 1
            inside.depth = getattr(inside, "depth", 0) + 1
            try:
                return _method(*args, **kwargs)
            finally:
                inside.depth -= 1
        setattr(ledger, name, counted)
    try:
        runner.run_until_settled(timeout=600)
        uploaded = sum(1 for record in runner.ledger.files() if record.state == "uploaded")
    finally:
        runner.close()
    with open(out_path, "w") as handle:
        json.dump({"ledger_calls": dict(calls), "uploaded": uploaded}, handle)


# The table ----------------------------------------------------------------------------------------------------------

def per_file(few, many, spread):
    """{metric: per-file cost} from the two runs' counts."""
    def flat(counts):
        values = {f"ledger {name}": n for name, n in counts["ledger_calls"].items()}
        values["ledger calls"] = sum(counts["ledger_calls"].values())
        values.update({f"fsync {name}": n for name, n in counts["fsyncs"].items()})
        values["fsyncs"] = sum(counts["fsyncs"].values())
        values.update({f"net {name}": n for name, n in counts["network"].items()})
        return values
    first, second = flat(few), flat(many)
    return {key: (second.get(key, 0) - first.get(key, 0)) / spread for key in sorted(set(first) | set(second))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--few", type=int, default=5)
    parser.add_argument("--many", type=int, default=25)
    parser.add_argument("--size", type=int, default=20_000, help="bytes per file")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "per_file_costs.json"))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (traces, configs, ledgers)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    if args.many <= args.few:
        parser.error(f"--many ({args.many}) must be more than --few ({args.few})")
    for case in args.only.split(","):
        if case not in CASES:
            parser.error(f"--only: unknown case {case!r}; known: {', '.join(CASES)}")
    workdir = tempfile.mkdtemp(prefix="filesync-costs-", dir="/var/tmp")
    print(f"per-file costs of {args.size:,}-byte files ({args.many} minus {args.few} files); load "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; workdir {workdir}", flush=True)
    results = {}
    try:
        for case in args.only.split(","):
            case_dir = os.path.join(workdir, case)
            os.makedirs(case_dir)
            started = time.monotonic()
            try:
                with case_setup(case, case_dir) as (proxy, configure, extra):
                    few = run_once(case, proxy, configure, extra, case_dir, args.few, args.size, args.timeout)
                    many = run_once(case, proxy, configure, extra, case_dir, args.many, args.size, args.timeout)
            except Unavailable as reason:
                print(f"{case}: not measured: {reason}", flush=True)
                results[case] = {"unavailable": str(reason)}
                continue
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:  # one case's failure, not the rest's
                print(f"{case}: FAILED: {error}", flush=True)
                results[case] = {"unavailable": f"failed: {str(error).splitlines()[0]}"}
                continue
            results[case] = per_file(few, many, args.many - args.few)
            print(f"{case} ({time.monotonic() - started:.0f} s): " + ", ".join(
                f"{key} {value:.2f}" for key, value in results[case].items() if value), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump({"args": vars(args), "per_file": results}, handle, indent=1)


def print_table(results):
    """A markdown table: one row per case."""
    print("\n| case | round trips | connections | fsyncs (ledger wal / staging / target / other) | ledger calls "
          "(claim / checkpoint / finish / register) |")
    print("|---|---|---|---|---|")
    for case, values in results.items():
        if "unavailable" in values:
            print(f"| {case} | not measured: {values['unavailable']} | | | |")
            continue

        def show(key):
            return f"{values.get(key, 0):.2f}".rstrip("0").rstrip(".")
        network = ("local", "local")
        if any(key.startswith("net ") for key in values):
            network = (show("net round_trips"), show("net connections"))
            if "net ftp data connections" in values:
                network = (network[0], f"{network[1]} (+{show('net ftp data connections')} data)")
        fsyncs = " / ".join(show(f"fsync {part}") for part in ("ledger wal", "staging", "target", "other"))
        values = dict(values)
        for name in ("claim", "finish"):  # one call, or one call for a batch of files
            values[f"ledger {name}"] = values.get(f"ledger {name}", 0) + values.get(f"ledger {name}_batch", 0)
        ledger = " / ".join(show(f"ledger {name}") for name in ("claim", "checkpoint", "finish", "register"))
        print(f"| {case} | {network[0]} | {network[1]} | {show('fsyncs')} ({fsyncs}) | {show('ledger calls')} "
              f"({ledger}) |")


if __name__ == "__main__":
    main()
