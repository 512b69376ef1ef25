"""FTPS (explicit TLS) for the ftp source and target, against real servers on 127.0.0.1: pyftpdlib's TLS_FTPHandler
and Debian's vsftpd with ssl_enable (which, like production vsftpd, requires every data connection to resume the
control connection's TLS session). Certificates come from a CA made here with openssl (support/tls.py).
"""
import ftplib
import logging
import os

import pytest

from conftest import assert_config_error
from filesync.devices import create_source, create_target
from filesync.engine.runner import LocalRunner
from filesync.errors import WAIT, DeviceUnavailable, action
from support.ftp_server import FtpServerProcess
from support.ftp_servers import PyftpdlibTls, Vsftpd

SERVERS = {"pyftpdlib": PyftpdlibTls, "vsftpd": lambda directory, **kw: Vsftpd(directory, tls=True, **kw)}


@pytest.fixture(params=sorted(SERVERS))
def server(request, tmp_path):
    with SERVERS[request.param](str(tmp_path / "server")) as running:
        yield running


class Interrupted(Exception):
    """Raised from progress() to stop an upload midway, as a killed worker would."""


def stop_after(limit):
    def progress(done, note=None):
        if done >= limit:
            raise Interrupted(done)
    return progress


def refusal(call):
    """The DeviceUnavailable `call` raises (the engine waits for the device), as its one line."""
    with pytest.raises(DeviceUnavailable) as caught:
        call()
    assert action(caught.value) == WAIT
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_upload_resumes_and_publishes_byte_identical_over_tls(server, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "flight.bin"
    local.write_bytes(data)
    target = create_target("nas", server.options())
    try:
        with open(local, "rb") as stream:
            with pytest.raises(Interrupted):
                target.write("logs/flight.bin", stream, 0, len(data), stop_after(1024 * 1024))
        held = target.held("logs/flight.bin")
        assert 1024 * 1024 <= held < len(data)  # the server kept what arrived before the interruption
        with open(local, "rb") as stream:
            stream.seek(held)
            target.write("logs/flight.bin", stream, held, len(data), lambda done, note=None: None)
        target.publish("logs/flight.bin", len(data))
        assert (tmp_path / "server" / "files" / "logs" / "flight.bin").read_bytes() == data
        assert b"".join(target.read("logs/flight.bin")) == data
    finally:
        target.close()


def test_source_lists_and_reads_over_tls(server):
    os.makedirs(os.path.join(server.storage, "2026-12-01"))
    data = os.urandom(700_000)
    with open(os.path.join(server.storage, "2026-12-01", "log.ulg"), "wb") as handle:
        handle.write(data)
    source = create_source("fc", server.options())
    try:
        listed = source.list()
        assert [(f.path, f.size) for f in listed] == [("2026-12-01/log.ulg", len(data))]
        assert b"".join(source.read("2026-12-01/log.ulg", 100_000)) == data[100_000:]
    finally:
        source.close()


def test_folder_to_ftps_through_the_engine(tmp_path):
    """The whole pipeline into vsftpd over TLS: staged, sent, published, verified by reading it back over TLS."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = os.urandom(2 * 1024 * 1024)
    (inbox / "a.bin").write_bytes(data)
    with Vsftpd(str(tmp_path / "server"), tls=True) as server:
        runner = LocalRunner({
            "staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
            "sources": {"inbox": {"kind": "folder", "path": str(inbox), "min_age": 0.0}},
            "targets": {"nas": server.options()},
            "pipelines": [{"source": "inbox", "targets": ["nas"]}]})
        try:
            runner.run_until_settled(timeout=60)
            [record] = runner.ledger.files()
            assert record.state == "uploaded", record.error
        finally:
            runner.close()
        assert (tmp_path / "server" / "files" / "a.bin").read_bytes() == data


def test_refused_without_the_ca_bundle(server):
    """The test CA is not among the system's: without ca_bundle the certificate is not trusted (the handshake after
    AUTH TLS fails, before USER and PASS would be sent), and the message shows no secret."""
    options = server.options()
    del options["ca_bundle"]
    target = create_target("nas", {**options, "password": "do-not-show-me"})
    message = refusal(target.probe)
    assert "TLS: the server's certificate is not accepted: unable to get local issuer certificate" in message, message
    assert "do-not-show-me" not in message
    source = create_source("fc", options)
    assert "certificate is not accepted" in refusal(source.list)


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_an_expired_certificate_is_refused_with_a_clear_line(kind, tmp_path):
    with SERVERS[kind](str(tmp_path / "server"), expired=True) as server:
        message = refusal(create_target("nas", server.options()).probe)
        assert "TLS: the server's certificate is not accepted: certificate has expired" in message, message


def test_a_server_without_tls_is_refused_not_used_in_clear_text(tmp_path):
    """tls: true against a plain FTP server: refused at AUTH TLS; the password is never sent in clear text."""
    server = FtpServerProcess(str(tmp_path / "plain"), str(tmp_path / "ftp.log")).start()
    try:
        options = {**server.target_options(), "tls": True, "timeout": 5.0}
        message = refusal(create_target("nas", options).probe)
        assert f"127.0.0.1:{server.port} does not offer TLS (AUTH TLS: 500" in message, message
        assert "nothing is sent in clear text" in message
    finally:
        server.stop()


def test_verify_tls_false_warns_once_and_connects(tmp_path, caplog):
    with PyftpdlibTls(str(tmp_path / "server"), expired=True) as server:
        options = server.options(verify_tls=False)
        del options["ca_bundle"]
        with caplog.at_level(logging.WARNING):
            source = create_source("fc", options)
            try:
                assert source.list() == []
                source.probe()
            finally:
                source.close()
    warnings = [r for r in caplog.records if "verify_tls is false" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "NOT checked" in warnings[0].getMessage()


def test_data_connections_resume_the_tls_session(tmp_path):
    """vsftpd refuses a data connection with a TLS session of its own (require_ssl_reuse); ftplib's FTP_TLS alone
    fails there, which is why the device reuses the control connection's session."""
    with Vsftpd(str(tmp_path / "server"), tls=True) as server:
        import ssl
        plain = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=server.ca_file), timeout=5)
        plain.connect("127.0.0.1", server.port)
        plain.auth()
        plain.login("anonymous", "")
        plain.prot_p()
        with pytest.raises(ftplib.error_perm, match="session reuse required"):
            plain.nlst(server.device_root)
        plain.close()
        source = create_source("fc", server.options())
        try:
            assert source.list() == []
        finally:
            source.close()


@pytest.mark.parametrize("options, key, text", [
    ({"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle", "applies only with tls: true"),
    ({"verify_tls": False}, "verify_tls", "applies only with tls: true"),
    ({"tls": True, "ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle", "no such file /nonexistent/ca.pem"),
    ({"tls": True, "ca_bundle": "CA", "verify_tls": False}, "verify_tls", "false contradicts ca_bundle"),
    ({"tls": True, "ca_bundle": "CA"}, "ca_bundle", "holds no usable certificate"),
    ({"tls": "yes"}, "tls", "expected true or false"),
])
def test_bad_tls_options_name_the_key(tmp_path, options, key, text):
    if options.get("ca_bundle") == "CA":
        options["ca_bundle"] = str(tmp_path / "ca.pem")
        (tmp_path / "ca.pem").write_text("not a certificate\n")
    for create, role in ((create_source, "sources"), (create_target, "targets")):
        assert_config_error(lambda: create("fc", {"kind": "ftp", "host": "127.0.0.1", **options}),
                            f"{role}.fc.{key}", text)
