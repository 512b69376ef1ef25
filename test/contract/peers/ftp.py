"""FTP peers: pyftpdlib (support/ftp_server.py), vsftpd (LIST only) and ProFTPD with mod_digest, restarts allowed and
refused, and as a target with AllowOverwrite off (ProFTPD's own default: no STOR or RNTO over a file)
(support/ftp_servers.py); FTPS (explicit TLS, certificate checked against the test's CA): pyftpdlib's
TLS_FTPHandler and vsftpd with ssl_enable (which requires TLS session reuse on data connections). Each serves one
storage directory as both a source and a target."""
import os
from contextlib import contextmanager

from contract.peer import Peer, peer
from filesync.devices import create_source, create_target
from support.ftp_server import FtpServerProcess
from support.ftp_servers import Proftpd, PyftpdlibTls, Vsftpd

PROFTPD_DIGESTS = ("sha256", "md5", "crc32")
PROFTPD = {"digests": PROFTPD_DIGESTS, "checksum": True, "non_utf8": True}


def ftp_peer(server, options, **fields):
    """A Peer for an FTP server object with stop()/start(), serving `options` (an ftp source/target config)."""
    return Peer(stop=server.stop, start=server.start,
                new_source=lambda **extra: create_source("peer", {**options, **extra}),
                new_target=lambda **extra: create_target("peer", {**options, **extra}), **fields)


@peer("pyftpdlib")
@contextmanager
def pyftpdlib(directory):
    server = FtpServerProcess(os.path.join(directory, "files"), os.path.join(directory, "ftp.log")).start()
    try:
        yield ftp_peer(server, {**server.target_options("/"), "timeout": 10.0}, storage=server.root,
                       expect={"digests": (), "checksum": False, "start_over": False, "non_utf8": False},
                       credentials=True)
    finally:
        server.stop()


@peer("vsftpd")
@contextmanager
def vsftpd(directory):
    with Vsftpd(directory) as server:
        yield ftp_peer(server, server.options(), storage=server.storage,
                       expect={"digests": (), "checksum": False, "start_over": False, "non_utf8": True})


@peer("pyftpdlib-tls")
@contextmanager
def pyftpdlib_tls(directory):
    with PyftpdlibTls(directory) as server:
        yield ftp_peer(server, server.options(), storage=server.storage,
                       expect={"digests": (), "checksum": False, "start_over": False, "non_utf8": False},
                       credentials=True)


@peer("vsftpd-tls")
@contextmanager
def vsftpd_tls(directory):
    with Vsftpd(directory, tls=True) as server:
        yield ftp_peer(server, server.options(), storage=server.storage,
                       expect={"digests": (), "checksum": False, "start_over": False, "non_utf8": True})


@peer("proftpd-restart")
@contextmanager
def proftpd_restart(directory):
    with Proftpd(directory, allow_restart=True) as server:
        yield ftp_peer(server, server.options(), storage=server.storage,
                       expect={**PROFTPD, "start_over": False}, credentials=True)


@peer("proftpd-no-restart")
@contextmanager
def proftpd_no_restart(directory):
    with Proftpd(directory, allow_restart=False) as server:
        yield ftp_peer(server, server.options(), storage=server.storage,
                       expect={**PROFTPD, "start_over": True}, credentials=True)


@peer("proftpd-no-overwrite", sources=False)
@contextmanager
def proftpd_no_overwrite(directory):
    with Proftpd(directory, allow_overwrite=False) as server:  # it refuses REST+STOR over the .part too
        yield ftp_peer(server, server.options(), storage=server.storage,
                       expect={**PROFTPD, "start_over": True}, credentials=True)
