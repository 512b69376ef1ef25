"""The shaped status that the terminal, the rqt widget and the page share; the page's server on loopback (who may
read and who may act, which Host names it answers, how long a request may take, how many connections it serves);
the web options. No ROS: the server is fed views as the web node feeds it."""
import contextlib
import logging
import socket
import threading
import time

import pytest
import requests

from conftest import assert_config_error
from filesync.config import load_config
from filesync.status import (MiB, ParkedFile, SOURCE, StatusBuilder, TransferStatus, WorkerReport, apply_event,
                             format_status, status_view)
from filesync.ui.web import StatusPage, StatusServer
from support.launch import free_port

RAW = {"sources": {"inbox": {"kind": "folder", "path": "/tmp/nowhere"}},
       "targets": {"ftp": {"kind": "ftp", "host": "127.0.0.1", "password": "x"}},
       "pipelines": [{"source": "inbox", "targets": ["ftp"]}]}
CLASH = ParkedFile(3, "inbox", "a/clash.bin", 2048, "upload ftp: holds a different file", ["target ftp"])


def _status(done=MiB, parked=(CLASH,), last_error=""):
    builder = StatusBuilder(load_config(RAW))
    report = WorkerReport("up", transfers=[TransferStatus(7, "inbox", "big.ulg", "upload", "ftp", 0, 4 * MiB)],
                          last_error=last_error, last_error_time=50.0 if last_error else 0.0)
    builder.build({}, [report], 0, now=10.0)
    report.transfers[0].bytes_done = done
    counts = {("inbox", "uploading"): (1, 4 * MiB), ("inbox", "failed"): (1, 2048)}
    return builder.build(counts, [report], 1 << 30, now=11.0, parked=parked)


def test_progress_within_a_file_counts_and_plot_fields_have_units():
    status = _status(done=MiB)
    assert status.bytes_waiting == 4 * MiB and status.bytes_to_move == 3 * MiB and status.mib_to_move == 3.0
    assert status.rate_kib_s == status.rate / 1024 and status.rate > 0
    assert _status(done=3 * MiB).mib_to_move == 1.0


def test_what_is_still_to_move_only_goes_down_through_a_files_download_and_its_uploads(tmp_path):
    """From the real ledger: one 4 MiB file, two targets. Each copy counts once, so the figure the rqt plot draws
    falls steadily from found to uploaded (it fell to 0 after the download and jumped back as the upload began)."""
    from filesync.ledger.store import Ledger
    builder = StatusBuilder(load_config(dict(RAW, targets={"ftp": RAW["targets"]["ftp"], "nas": RAW["targets"]["ftp"]},
                                             pipelines=[{"source": "inbox", "targets": ["ftp", "nas"]}])))
    ledger = Ledger(str(tmp_path / "ledger.db"))
    [record] = ledger.register("inbox", ["ftp", "nas"], False, [("big.ulg", 4 * MiB, 1.0)])
    seen, clock = [], [10.0]

    def sample(transfer=None):
        clock[0] += 1
        reports = [WorkerReport("w", transfers=[transfer] if transfer else [])]
        seen.append(builder.build(ledger.counts(), reports, 1 << 30, now=clock[0],
                                  to_copy=ledger.bytes_to_copy()).bytes_to_move)

    sample()
    for kind, device in (("download", "inbox"), ("upload", "ftp"), ("upload", "nas")):
        ledger.claim(kind, device, "w", 30)
        for done in (0, MiB, 3 * MiB, 4 * MiB):
            sample(TransferStatus(record.id, "inbox", "big.ulg", kind, device, done, 4 * MiB))
        ledger.finish(record.id, kind, device, "w", "done")
        sample()
    ledger.close()
    assert seen[0] == 12 * MiB and seen[-1] == 0
    assert seen == sorted(seen, reverse=True), [value / MiB for value in seen]


def test_a_report_older_than_the_ledger_does_not_make_the_figure_dip_at_the_hand_over(tmp_path):
    """The status reads the ledger each second and keeps each worker's latest report, which may be older: at the
    hand-over the ledger counts the download done while the report still shows it at 100 %. Counted as moved, that
    made mib_to_move 0 for one sample, then it jumped back as the upload began."""
    from filesync.ledger.store import Ledger
    builder = StatusBuilder(load_config(RAW))
    ledger = Ledger(str(tmp_path / "ledger.db"))
    [record] = ledger.register("inbox", ["ftp"], False, [("big.ulg", 4 * MiB, 1.0)])
    seen, clock = [], [10.0]

    def sample(*transfers):
        clock[0] += 1
        reports = [WorkerReport("w", transfers=list(transfers))]
        seen.append(builder.build(ledger.counts(), reports, 1 << 30, now=clock[0], to_copy=ledger.bytes_to_copy(),
                                  moving=ledger.copies_under_way()).bytes_to_move / MiB)

    def at(kind, device, done):
        return TransferStatus(record.id, "inbox", "big.ulg", kind, device, done, 4 * MiB)

    ledger.claim("download", "inbox", "w", 30)
    sample(at("download", "inbox", 3 * MiB))
    sample(at("download", "inbox", 4 * MiB))
    ledger.finish(record.id, "download", "inbox", "w", "done")
    sample(at("download", "inbox", 4 * MiB))  # the report from before the finish
    ledger.claim("upload", "ftp", "w", 30)
    sample(at("download", "inbox", 4 * MiB))  # still, though the upload is claimed
    sample(at("upload", "ftp", 1 * MiB))
    ledger.finish(record.id, "upload", "ftp", "w", "done")
    sample(at("upload", "ftp", 4 * MiB))
    ledger.close()
    assert seen == [5.0, 4.0, 4.0, 4.0, 3.0, 0.0]


def test_parked_files_and_the_last_error_come_from_the_ledger_when_no_worker_remembers_one():
    view = status_view(_status(), now=20.0)
    assert view["files_parked"] == 1
    assert view["parked"] == [{"file_id": 3, "source": "inbox", "path": "a/clash.bin", "size": "2.0 KiB",
                               "reason": "upload ftp: holds a different file", "devices": "target ftp"}]
    assert view["last_error"] == "parked inbox/a/clash.bin: upload ftp: holds a different file"
    assert view["last_error_when"] == "from the ledger"
    assert "last error (from the ledger): parked inbox/a/clash.bin" in format_status(_status(), now=20.0)
    live = status_view(_status(last_error="upload big.ulg: 421 busy"))
    assert live["last_error"] == "upload big.ulg: 421 busy" and live["last_error_when"] != "from the ledger"


def test_the_shared_view_has_bars_and_texts_with_units():
    view = status_view(_status(), now=20.0)
    transfer = view["transfers"][0]
    assert (transfer["percent"], transfer["amount"]) == (25.0, "1.0 MiB/4.0 MiB")
    assert transfer["bar"] == "[#####---------------]  25%"
    assert view["to_move"] == "3.0 MiB" and view["pipelines"][0]["counts"] == "uploading 1, failed 1"
    assert [(link["role"], link["state"]) for link in view["links"]] == [(SOURCE, "unknown"), ("target", "unknown")]


class Event:
    def __init__(self, **fields):
        self.__dict__.update(dict(file_id=0, source="inbox", path="", size=0, state="", task="", device="",
                                  error=""), **fields)


def test_events_bring_the_parked_list_up_to_date_between_two_statuses():
    view = status_view(_status(parked=()))
    assert apply_event(view, Event(file_id=9, path="b.bin", state="failed", task="upload", device="ftp",
                                   error="upload ftp: refused"))
    assert view["parked"][0]["reason"] == "upload ftp: refused" and view["files_parked"] == 2
    assert not apply_event(view, Event(file_id=8, state="uploading"))  # not a parked file: nothing to change
    assert apply_event(view, Event(file_id=9, state="downloaded"))  # retried
    assert view["parked"] == [] and view["files_parked"] == 1


class Actions:
    def __init__(self):
        self.calls = []

    def retry(self, file_id):
        self.calls.append(("retry", file_id))
        return True, f"file {file_id} is back in line"

    def forget(self, file_id):
        self.calls.append(("forget", file_id))
        return False, f"no file {file_id}"

    def retry_all(self):
        self.calls.append(("retry_all",))
        return True, "1 of 1 parked file(s) back in line"


@contextlib.contextmanager
def serving(**options):
    """A StatusServer on 127.0.0.1 with one view, the token s3cret and `options`: (server, base URL, actions)."""
    page, actions = StatusPage(), Actions()
    page.publish(status_view(_status()))
    server = StatusServer("127.0.0.1", free_port(), page, actions, token="s3cret", **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}", actions
    finally:
        server.shutdown()


@pytest.fixture
def server():
    with serving() as served:
        yield served


def test_loopback_reads_without_the_token_and_acts_only_with_it_and_the_header(server):
    server, base, actions = server
    page = requests.get(base + "/", timeout=5)
    assert page.ok and "<title>filesync</title>" in page.text and "default-src 'self'" in \
        page.headers["Content-Security-Policy"]
    view = requests.get(base + "/api/status", timeout=5).json()
    assert view["parked"][0]["path"] == "a/clash.bin" and view["can_act"] is False
    action = {"X-Filesync-Action": "1"}
    assert requests.post(base + "/api/files/3/retry", headers=action, timeout=5).status_code == 403
    wrong = dict(action, Authorization="Bearer s3crex")
    assert requests.post(base + "/api/files/3/retry", headers=wrong, timeout=5).status_code == 403
    right = {"Authorization": "Bearer s3cret"}
    assert requests.post(base + "/api/files/3/retry", headers=right, timeout=5).status_code == 403  # no header
    assert actions.calls == []
    reply = requests.post(base + "/api/files/3/retry", headers=dict(action, **right), timeout=5)
    assert reply.ok and reply.json() == {"ok": True, "message": "file 3 is back in line"}
    assert requests.post(base + "/api/files/4/forget", headers=dict(action, **right), timeout=5).status_code == 409
    assert requests.post(base + "/api/retry-all", headers=dict(action, **right), timeout=5).ok
    assert actions.calls == [("retry", 3), ("forget", 4), ("retry_all",)]


def test_the_token_in_the_address_becomes_a_cookie_and_leaves_the_address(server):
    _, base, _ = server
    assert requests.get(base + "/?token=nope", timeout=5, allow_redirects=False).status_code == 401
    session = requests.Session()
    reply = session.get(base + "/?token=s3cret", timeout=5, allow_redirects=False)
    assert reply.status_code == 303 and reply.headers["Location"] == "/"
    assert "HttpOnly" in reply.headers["Set-Cookie"] and "SameSite=Strict" in reply.headers["Set-Cookie"]
    assert session.get(base + "/api/status", timeout=5).json()["can_act"] is True


def test_the_event_stream_sends_each_new_view(server):
    server, base, _ = server
    with requests.get(base + "/api/events", stream=True, timeout=5) as stream:
        lines = stream.iter_lines(chunk_size=1)  # an event at a time (the stream never ends by itself)
        first = next(line for line in lines if line.startswith(b"data: "))
        server.page.publish(status_view(_status(done=2 * MiB)))
        second = next(line for line in lines if line.startswith(b"data: "))
    assert b'"percent": 25.0' in first and b'"percent": 50.0' in second


def test_web_options_are_checked_and_another_address_needs_a_token(monkeypatch):
    assert load_config(RAW).web == {"enabled": True, "host": "127.0.0.1", "port": 8088, "token": "",
                                     "token_env": "", "token_file": "", "allowed_hosts": [], "request_timeout": 10.0,
                                     "max_connections": 32}
    assert_config_error(lambda: load_config(dict(RAW, web={"allowed_hosts": [3]})), "web.allowed_hosts")
    assert_config_error(lambda: load_config(dict(RAW, web={"request_timeout": 0})), "web.request_timeout")
    assert_config_error(lambda: load_config(dict(RAW, web={"max_connections": 0})), "web.max_connections")
    assert_config_error(lambda: load_config(dict(RAW, web={"host": "0.0.0.0"})), "web.host", "needs a token")
    assert_config_error(lambda: load_config(dict(RAW, web={"port": 70000})), "web.port")
    assert_config_error(lambda: load_config(dict(RAW, web={"tokn": "x"})), "web.tokn")
    assert load_config(dict(RAW, web={"host": "0.0.0.0", "token_env": "FILESYNC_WEB_TOKEN"})).web["host"] == \
        "0.0.0.0"
    with pytest.raises(ValueError):
        StatusServer("0.0.0.0", free_port(), StatusPage(), Actions(), token="")


def test_a_request_that_names_another_host_is_refused_with_no_data():
    """DNS rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1 reaches the server with
    Host: evil.example. It must read nothing (it was served the view, file names and errors, without a token)."""
    with serving(allowed_hosts=["Robot.Local"]) as (server, base, _):
        _check_host_names(server, base)


def _check_host_names(server, base):
    port = server.server_address[1]
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", f"127.0.0.1@evil:{port}",
                 f"localhost:{port}/x", ""):
        for path in ("/api/status", "/api/events", "/"):
            reply = requests.get(base + path, headers={"Host": host}, timeout=5, stream=True)
            assert (reply.status_code, reply.raw.read(100)) == (421, b""), (host, path)
    action = {"Host": f"evil.example:{port}", "Authorization": "Bearer s3cret", "X-Filesync-Action": "1"}
    assert requests.post(base + "/api/retry-all", headers=action, timeout=5).status_code == 421
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", "robot.local:8088"):
        assert requests.get(base + "/api/status", headers={"Host": host}, timeout=5).ok, host


def test_the_names_allowed_follow_the_address_served():
    from filesync.ui.web import allowed_host_names, own_addresses
    assert allowed_host_names("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    on_one = allowed_host_names("10.1.2.3", ["laptop-view.lan"])
    assert {"10.1.2.3", socket.gethostname().lower(), "laptop-view.lan"} <= on_one and "localhost" not in on_one
    everywhere = allowed_host_names("0.0.0.0")
    assert {"localhost", "127.0.0.1", socket.gethostname().lower()} <= everywhere
    assert "127.0.0.1" in own_addresses()


def _closed_within(connection, seconds):
    """True when the server closes `connection` within `seconds` (whatever it sent first is read and dropped)."""
    connection.settimeout(seconds)
    try:
        while connection.recv(4096):
            pass
        return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_an_idle_or_trickling_connection_is_closed_but_a_live_event_stream_is_not():
    """300 idle connections held 300 threads: each connection has request_timeout to send a whole request."""
    with serving(request_timeout=0.5) as (server, base, _):
        _check_timeouts(server, base)


def _check_timeouts(server, base):
    address = server.server_address
    with socket.create_connection(address, timeout=5) as idle:
        started = time.monotonic()
        assert _closed_within(idle, 5), "an idle connection stayed open"
        assert time.monotonic() - started < 2
    with socket.create_connection(address, timeout=5) as trickle:  # a byte every 0.2 s never finishes its head
        trickle.sendall(b"GET /api/status HTTP/1.1\r\n")
        started, closed = time.monotonic(), False
        while not closed and time.monotonic() - started < 5:
            try:
                trickle.sendall(b"X")
            except OSError:
                break
            closed = _closed_within(trickle, 0.2)
        assert closed or time.monotonic() - started < 5, "a trickling request held its connection"
        assert time.monotonic() - started < 2
    # a kept-alive connection may wait request_timeout for its next request, and is then closed
    with socket.create_connection(address, timeout=5) as kept:
        kept.sendall(f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\n\r\n".encode())
        assert kept.recv(12) == b"HTTP/1.1 200"
        assert _closed_within(kept, 5)
    # an event stream outlives the timeout many times over while views keep coming
    with requests.get(base + "/api/events", stream=True, timeout=5) as stream:
        lines = stream.iter_lines(chunk_size=1)
        events = 0
        for done in range(1, 9):
            server.page.publish(status_view(_status(done=done * MiB // 2)))
            next(line for line in lines if line.startswith(b"data: "))
            events += 1
            time.sleep(0.25)
    assert events == 8  # 2 s, four times the request timeout


def test_connections_beyond_the_cap_are_answered_503_without_a_thread_each():
    with serving(max_connections=3, request_timeout=30) as (server, base, _):
        _check_cap(server, base)


def _check_cap(server, base):
    threads = threading.active_count()
    held = [socket.create_connection(server.server_address, timeout=5) for _ in range(3)]
    try:
        deadline = time.monotonic() + 5
        while threading.active_count() - threads < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(20):
            with socket.create_connection(server.server_address, timeout=5) as extra:
                answer = b""
                while chunk := extra.recv(4096):  # the answer, then the server closes
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"too many connections\n")
        assert threading.active_count() - threads == 3  # one per connection served, none for those refused
        assert requests.get(base + "/api/status", timeout=5).status_code == 503
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + 5
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert requests.get(base + "/api/status", timeout=5).ok  # the closed ones made room


def test_a_token_in_the_address_is_never_logged(server, caplog):
    server, base, _ = server
    caplog.set_level(logging.DEBUG, logger="filesync.web")
    action = {"X-Filesync-Action": "1", "Authorization": "Bearer s3cret"}
    assert requests.post(base + "/api/files/3/retry?token=s3cret", headers=action, timeout=5).ok
    assert requests.get(base + "/?token=s3cret", timeout=5, allow_redirects=False).status_code == 303
    assert requests.get(base + "/api/status?token=s3cret", timeout=5).ok
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/api/files/3/retry" in logged and "s3cret" not in logged, logged
    with socket.create_connection(server.server_address, timeout=5) as bad:  # a request line the server rejects
        bad.sendall(b"GET /?token=s3cret extra HTTP/1.1\r\n\r\n")
        assert bad.recv(12) == b"HTTP/1.1 400"
    time.sleep(0.2)  # the server logs after it answered
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Bad request syntax" in logged and "s3cret" not in logged, logged


def test_an_empty_token_file_or_variable_is_one_line_at_load(tmp_path, monkeypatch):
    """It passed the check, and on another address the web node then crashed in a loop (no server without a token)."""
    empty = tmp_path / "token"
    empty.write_text("\n")
    for host in ("0.0.0.0", "127.0.0.1"):
        message = assert_config_error(lambda: load_config(dict(RAW, web={"host": host, "token_file": str(empty)})),
                                      "web.token_file", "is empty")
        assert str(empty) in message
    assert_config_error(lambda: load_config(dict(RAW, web={"token_file": str(tmp_path / "none")})),
                        "web.token_file", "cannot read")
    monkeypatch.setenv("FILESYNC_TEST_TOKEN", "")
    assert_config_error(lambda: load_config(dict(RAW, web={"host": "0.0.0.0", "token_env": "FILESYNC_TEST_TOKEN"})),
                        "web.token_env", "FILESYNC_TEST_TOKEN is empty")
    empty.write_text("s3cret-token\n")
    assert load_config(dict(RAW, web={"host": "0.0.0.0", "token_file": str(empty)})).web["token_file"] == str(empty)
    assert load_config(dict(RAW, web={"enabled": False, "token_env": "FILESYNC_TEST_TOKEN"})).web["enabled"] is False
