"""MAVLink FTP speed: our `mavlink` source against pymavlink's mavftp and MAVROS-style reads; our `mavlink` target
against pymavlink's mavftp `put`.

One MAVSDK autopilot (test/support/mavsdk_autopilot.py) serves one log; each reader fetches it through:
  serial    the link emulator at 921600 baud (92,160 B/s each way, 1 ms latency): 82.8 KB/s of file data at most
  loopback  plain UDP on 127.0.0.1, where the MAVSDK server itself is the limit
  serial5   the serial link with 5% of datagrams lost each way
  serial20  the serial link with 20% of datagrams lost each way
The link emulator runs in a process of its own (support.linkemu.LinkEmulatorProcess), as a real link is separate
hardware: in the reader's process it would wait for the reader's interpreter lock.
Readers:
  ours        filesync.devices.vehicle.mavlink.MavlinkSource.read (burst reads, pipelined hole filling)
  pymavlink   pymavlink.mavftp.MAVFTP used as a library, burst_read_size 239 (GPL: run, not copied)
  mavros      sequential 239-byte ReadFile, one request in flight, resent on timeout (MAVROS's way, plus a retry)
  bare        open + BurstReadFile from wherever the last burst ended, counting bytes, no hole filling: the
              ceiling of server and link (meaningless with loss, so not run there)
Every reader's bytes are checked against the file's sha256 (bare only counts).

Writes (--writes): each writer sends one file of --size bytes to the autopilot over `serial` and `serial5` (the link
emulator in this process, since it carries support.mavsdk_autopilot.Px4WriteRules: MAVSDK's WriteFile ACK says
neither offset nor count, which pymavlink's put needs and PX4's gives):
  ours         filesync.devices.vehicle.mavlink.MavlinkTarget.write (CreateFile, WriteFile pipelined 16 deep, 239 bytes each)
  pymavlink    pymavlink.mavftp.MAVFTP.cmd_put with write_size 239, write_qsize 5
  pymavlink80  the same with pymavlink's defaults (write_size 80, write_qsize 5)
Every copy is compared with the file's bytes. pymavlink's put is waited for as its own command line does
(process_ftp_reply("put")), which returns when the upload's last reply came; waiting for "CreateFile" instead returned
only after pymavlink's idle detection (3.7 s of silence) and made every put look slower by that much.

--rounds N runs every reader or writer N times per link, the order of the two sides alternating from round to
round (the first side of one round is the last of the next), and prints the median with the range over the rounds.
Each figure is printed with the machine's load average at its start (os.getloadavg: 1 minute): pymavlink needs a
whole core, and on a busy machine it starves, so figures taken under load compare badly with quiet ones.

Run: .venv/bin/python bench/mavftp_bench.py [--size BYTES] [--links serial,loopback,serial5,serial20] [--readers ...]
                                            [--rounds N]
     .venv/bin/python bench/mavftp_bench.py --writes [--size BYTES] [--writers ours,pymavlink,pymavlink80] [--rounds N]
     .venv/bin/python bench/mavftp_bench.py --peak-rss 5000000,20000000
The second form reads a log of each size with our `mavlink` source on loopback in a child process of its own and
reports that process's peak RSS (ru_maxrss) before and after the read: the downloader's memory, flat in the log's size.
"""
import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "src"), os.path.join(HERE, "..", "test")]

from pymavlink import mavutil  # noqa: E402

from filesync.devices import create_source  # noqa: E402
from filesync.devices.vehicle.mavftp import MavFtpClient  # noqa: E402
from filesync.devices.vehicle.mavftp_wire import MAX_DATA, Op  # noqa: E402
from support.linkemu import LinkEmulator, LinkEmulatorProcess  # noqa: E402
from support.mavsdk_autopilot import MavsdkAutopilot, Px4WriteRules  # noqa: E402

SERIAL = 92160
LINK_LIMIT = SERIAL * MAX_DATA / 266  # file bytes/s when every byte on the wire is a full FTP frame: 82.8 KB/s
REMOTE = "/log/2024-05-01/12_00_00.ulg"


def ours(url, size, digest):
    source = create_source("bench", {"kind": "mavlink", "url": url, "root": "/log", "settle": False,
                                     "source_system": 244})
    try:
        hasher, count = hashlib.sha256(), 0
        for chunk in source.read("2024-05-01/12_00_00.ulg", 0):
            hasher.update(chunk)
            count += len(chunk)
        return count, hasher.hexdigest() == digest
    finally:
        source.close()


def _pymavlink_ftp(url, write_size=80):
    """(connection, MAVFTP) of pymavlink, with burst 239 and the given write size."""
    from pymavlink.mavftp import MAVFTP, MAVFTPSettings
    master = mavutil.mavlink_connection(url, source_system=247, source_component=190)
    master.mav.heartbeat_send(6, 8, 0, 0, 0)  # MAVSDK's udpin learns our address from it
    master.wait_heartbeat(timeout=10)
    settings = MAVFTPSettings([("debug", int, 0), ("pkt_loss_tx", int, 0), ("pkt_loss_rx", int, 0),
                               ("max_backlog", int, 5), ("burst_read_size", int, 239), ("write_size", int, write_size),
                               ("write_qsize", int, 5), ("idle_detection_time", float, 3.7),
                               ("read_retry_time", float, 1.0), ("retry_time", float, 0.5)])
    return master, MAVFTP(master, target_system=1, target_component=1, settings=settings)


def pymavlink_mavftp(url, size, digest):
    master, ftp = _pymavlink_ftp(url)
    try:
        with tempfile.TemporaryDirectory() as folder:
            local = os.path.join(folder, "copy.ulg")
            ftp.cmd_get([REMOTE, local])
            result = ftp.process_ftp_reply("OpenFileRO", timeout=3600)
            if result.error_code != 0 or not os.path.exists(local):
                return 0, False
            with open(local, "rb") as handle:
                hasher = hashlib.sha256()
                for block in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(block)
            return os.path.getsize(local), hasher.hexdigest() == digest
    finally:
        master.close()


def mavros_style(url, size, digest):
    client = MavFtpClient(url, source_system=248)
    try:
        session, remote_size = client.open_read(REMOTE)
        hasher, offset = hashlib.sha256(), 0
        while offset < remote_size:
            # never past the end: MAVSDK's server answers a read that reaches beyond the end with NAK Fail
            reply = client._request(Op.READ_FILE, "read", session=session, offset=offset,
                                    size=min(MAX_DATA, remote_size - offset))
            hasher.update(reply.data)
            offset += len(reply.data)
        client.terminate_session(session)
        return offset, hasher.hexdigest() == digest
    finally:
        client.close()


def bare(url, size, digest):
    client = MavFtpClient(url, source_system=249)
    try:
        session, remote_size = client.open_read(REMOTE)
        offset, seq = 0, 1000
        while offset < remote_size:
            client._send(Op.BURST_READ_FILE, seq, session, offset, size=MAX_DATA)
            while True:
                reply = client._poll(2.0)
                if reply is None:
                    break
                if reply.req_opcode != Op.BURST_READ_FILE or reply.opcode != Op.ACK:
                    continue
                offset = max(offset, reply.offset + reply.size)
                seq = reply.seq
                if reply.burst_complete:
                    break
            seq = (seq + 1) % 65536
        client.terminate_session(session)
        return offset, None
    finally:
        client.close()


READERS = {"ours": ours, "pymavlink": pymavlink_mavftp, "mavros": mavros_style, "bare": bare}


def write_ours(url, local, remote):
    """Our `mavlink` target's write() of `local` to `remote` (its .part name), as the uploader calls it."""
    from filesync.devices import create_target
    from filesync.paths import part_name
    folder, name = os.path.split(remote)
    target = create_target("bench", {"kind": "mavlink", "url": url, "root": folder, "source_system": 244})
    try:
        target.probe()
        started = time.monotonic()
        with open(local, "rb") as stream:
            size = os.path.getsize(local)
            target.write(name, stream, 0, size, lambda done, note=None: None)
        return time.monotonic() - started, os.path.join(folder, part_name(name))
    finally:
        target.close()


def write_pymavlink(write_size):
    def put(url, local, remote):
        master, ftp = _pymavlink_ftp(url, write_size)
        try:
            started = time.monotonic()
            ftp.cmd_put([local, remote])
            result = ftp.process_ftp_reply("put", timeout=3600)  # as `python -m pymavlink.mavftp put` waits
            elapsed = time.monotonic() - started
            return (elapsed, remote) if result.error_code == 0 else (elapsed, None)
        finally:
            master.close()
    return put


WRITERS = {"ours": write_ours, "pymavlink": write_pymavlink(239), "pymavlink80": write_pymavlink(80)}


def measure_writes(size, links, writers, rounds=1, log=sys.stderr, loads=None):
    """Send one file of `size` bytes to a MAVSDK autopilot (behind Px4WriteRules) with each writer over each link,
    `rounds` times, the writers' order alternating from round to round.

    Returns rows (link, writer, bytes, seconds, KB/s, identical); `loads` (a list) gets the load average at the start
    of each row. The time counts from the first request after the connection is up (each writer waits for the
    vehicle's HEARTBEAT before).
    """
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "upload.ulg")
        with open(local, "wb") as handle:
            handle.write(os.urandom(size))
        with open(local, "rb") as handle:
            data = handle.read()
        root = os.path.join(folder, "vehicle")
        os.makedirs(os.path.join(root, "up"))
        with MavsdkAutopilot(root) as vehicle:
            for round_number in range(rounds):
                for link_name in links:
                    for writer_name in alternate(writers, round_number):
                        remote = f"/up/{link_name}-{writer_name}-{round_number}.ulg"
                        link = LinkEmulator(("127.0.0.1", vehicle.port), seed=5 + round_number,
                                            filters=[Px4WriteRules(root)], **LINKS[link_name]).start()
                        load = os.getloadavg()[0]
                        try:
                            elapsed, written = WRITERS[writer_name](link.url, local, remote)
                            correct = written is not None and open(os.path.join(root, written.lstrip("/")),
                                                                   "rb").read() == data
                        except Exception as error:  # a writer that fails is reported, not fatal
                            elapsed, correct = 0.0, f"error: {error}"
                        finally:
                            link.stop()
                        rate = size / elapsed / 1000 if elapsed and correct is True else 0.0
                        rows.append((link_name, writer_name, size, elapsed, rate, correct))
                        if loads is not None:
                            loads.append(load)
                        print(f"round {round_number + 1} {link_name:9} {writer_name:12} {size:>10} B {elapsed:8.1f} s "
                              f"{rate:7.1f} KB/s {correct}  load {load:.2f}", file=log, flush=True)
    return rows


def alternate(sides, round_number):
    """The sides in their order for this round: as given in even rounds, reversed in odd ones."""
    return list(sides) if round_number % 2 == 0 else list(reversed(sides))


def summarize(rows, loads):
    """{(link, side): (median KB/s, min, max, rounds, all identical, (min load, max load))} over the rounds, in the
    order the pairs first ran; `loads` holds the load average at the start of each row."""
    grouped = {}
    for (link, side, _, _, rate, correct), load in zip(rows, loads):
        grouped.setdefault((link, side), []).append((rate, correct, load))
    summary = {}
    for key, runs in grouped.items():
        rates = sorted(rate for rate, _, _ in runs)
        loads = [load for _, _, load in runs]
        verdicts = {correct for _, correct, _ in runs}
        verdict = verdicts.pop() if len(verdicts) == 1 else sorted(map(str, verdicts))
        summary[key] = (rates[len(rates) // 2], rates[0], rates[-1], len(runs), verdict, (min(loads), max(loads)))
    return summary


def _range(low, high, digits=1):
    low, high = f"{low:.{digits}f}", f"{high:.{digits}f}"
    return low if low == high else f"{low}-{high}"


def print_write_table(rows, size, loads):
    summary = summarize(rows, loads)
    best_peer = {}
    for (link, writer), (median, *_rest) in summary.items():
        if writer.startswith("pymavlink"):
            best_peer[link] = max(best_peer.get(link, 0.0), median)
    rounds = max(runs for _, _, _, runs, _, _ in summary.values())
    print(f"\nFile: {size:,} bytes written to the vehicle, {rounds} round(s), the writers' order alternating. Link "
          f"limit (921600 baud): {LINK_LIMIT / 1000:.1f} KB/s.\n")
    print("| link | writer | KB/s (median) | range | / link limit | / best pymavlink put | load average | "
          "bytes identical |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for (link, writer), (median, low, high, _, correct, loads) in summary.items():
        peer = best_peer.get(link)
        print(f"| {link} | {writer} | {median:.1f} | {_range(low, high)} | {median * 1000 / LINK_LIMIT:.2f} | "
              f"{f'{median / peer:.2f}' if peer else '-'} | {_range(*loads, digits=2)} | "
              f"{'yes' if correct is True else f'NO ({correct})'} |")


LINKS = {"serial": dict(bandwidth=SERIAL, latency=0.001), "loopback": None,
         "serial5": dict(bandwidth=SERIAL, latency=0.001, loss=0.05),
         "serial20": dict(bandwidth=SERIAL, latency=0.001, loss=0.20)}


def write_log(root, size):
    """A log of `size` random bytes at REMOTE under `root`; returns its sha256."""
    path = os.path.join(root, REMOTE.lstrip("/"))
    os.makedirs(os.path.dirname(path))
    hasher = hashlib.sha256()
    with open(path, "wb") as handle:
        handle.write(b"ULog\x01\x12\x35")
        left = size - 7
        while left > 0:
            block = os.urandom(min(left, 1 << 20))
            handle.write(block)
            left -= len(block)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def peak_rss_child(url, size, digest):
    """In the child: peak RSS (KiB) after imports and after reading the log with our source, one line of JSON."""
    import json
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    count, correct = ours(url, size, digest)
    print(json.dumps({"before_kib": before, "after_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "bytes": count, "identical": correct, "seconds": time.monotonic() - started}))


def peak_rss(sizes):
    """Peak RSS of a process reading a log of each size through our `mavlink` source (loopback)."""
    import json
    print("| log | bytes read | identical | peak RSS after imports | peak RSS after the read |")
    print("|---:|---:|---|---:|---:|")
    for size in sizes:
        with tempfile.TemporaryDirectory() as root:
            digest = write_log(root, size)
            with MavsdkAutopilot(root) as vehicle:
                output = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-rss", vehicle.url,
                                         str(size), digest], capture_output=True, text=True, check=True,
                                        timeout=3600).stdout
        result = json.loads(output.strip().splitlines()[-1])
        print(f"| {size:,} B | {result['bytes']:,} | {'yes' if result['identical'] else 'NO'} | "
              f"{result['before_kib'] / 1024:.1f} MiB | {result['after_kib'] / 1024:.1f} MiB |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000_000)
    parser.add_argument("--links", default="serial,loopback,serial5")
    parser.add_argument("--readers", default="ours,pymavlink,mavros,bare")
    parser.add_argument("--writes", action="store_true", help="measure writes to the vehicle instead of reads")
    parser.add_argument("--writers", default="ours,pymavlink,pymavlink80")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side per link, alternating their order")
    parser.add_argument("--peak-rss", help="comma-separated log sizes: measure the reader's peak memory instead")
    parser.add_argument("--child-rss", nargs=3, metavar=("URL", "SIZE", "SHA256"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        url, size, digest = args.child_rss
        return peak_rss_child(url, int(size), digest)
    if args.peak_rss:
        return peak_rss([int(size) for size in args.peak_rss.split(",")])
    if args.writes:
        links = [link for link in args.links.split(",") if link != "loopback"] if args.links != parser.get_default(
            "links") else ["serial", "serial5"]
        loads = []
        rows = measure_writes(args.size, links, args.writers.split(","), args.rounds, loads=loads)
        return print_write_table(rows, args.size, loads)
    loads = []
    print_table(measure(args.size, args.links.split(","), args.readers.split(","), args.rounds, loads=loads), args.size,
                loads)


def measure(size, links, readers, rounds=1, log=sys.stderr, loads=None):
    """Fetch one log of `size` bytes from a MAVSDK autopilot with each reader over each link, `rounds` times, the
    readers' order alternating from round to round.

    Returns rows (link, reader, bytes, seconds, KB/s, identical: True, None when only counted, or an error text);
    `loads` (a list) gets the load average at the start of each row.
    """
    rows = []
    with tempfile.TemporaryDirectory() as root:
        digest = write_log(root, size)
        with MavsdkAutopilot(root) as vehicle:
            for round_number in range(rounds):
                for link_name in links:
                    for reader_name in alternate(readers, round_number):
                        if link_name in ("serial5", "serial20") and reader_name == "bare":
                            continue
                        link = None
                        if LINKS[link_name] is not None:
                            link = LinkEmulatorProcess(("127.0.0.1", vehicle.port), seed=5 + round_number,
                                                       **LINKS[link_name])
                        url = link.url if link else vehicle.url
                        load = os.getloadavg()[0]
                        started = time.monotonic()
                        try:
                            count, correct = READERS[reader_name](url, size, digest)
                        except Exception as error:  # a reader that fails is reported, not fatal
                            count, correct = 0, f"error: {error}"
                        elapsed = time.monotonic() - started
                        if link:
                            link.stop()
                        rate = count / elapsed / 1000
                        rows.append((link_name, reader_name, count, elapsed, rate, correct))
                        if loads is not None:
                            loads.append(load)
                        print(f"round {round_number + 1} {link_name:9} {reader_name:10} {count:>10} B {elapsed:8.1f} s "
                              f"{rate:7.1f} KB/s {'' if correct is None else correct}  load {load:.2f}", file=log,
                              flush=True)
    return rows


def print_table(rows, size, loads):
    summary = summarize(rows, loads)
    ceiling = {link: median for (link, reader), (median, *_rest) in summary.items() if reader == "bare"}
    peer = {link: median for (link, reader), (median, *_rest) in summary.items() if reader == "pymavlink"}
    rounds = max(runs for _, _, _, runs, _, _ in summary.values())
    print(f"\nFile: {size:,} bytes, {rounds} round(s), the readers' order alternating. Link limit (921600 baud): "
          f"{LINK_LIMIT / 1000:.1f} KB/s of file data.\n")
    print("| link | reader | KB/s (median) | range | / link limit | / bare ceiling | / pymavlink | load average | "
          "bytes identical |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for (link, reader), (median, low, high, _, correct, loads) in summary.items():
        limit = f"{median * 1000 / LINK_LIMIT:.2f}" if link.startswith("serial") else "-"
        base = ceiling.get(link) or ceiling.get("serial" if link.startswith("serial") else link)
        to_ceiling = f"{median / base:.2f}" if base else "-"
        to_peer = f"{median / peer[link]:.2f}" if peer.get(link) else "-"
        verdict = "counted only" if correct is None else ("yes" if correct is True else f"NO ({correct})")
        print(f"| {link} | {reader} | {median:.1f} | {_range(low, high)} | {limit} | {to_ceiling} | {to_peer} | "
              f"{_range(*loads, digits=2)} | {verdict} |")


if __name__ == "__main__":
    main()
