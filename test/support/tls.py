"""Certificates for TLS tests, made with openssl in the test's own directory: a CA and a server certificate for
127.0.0.1 (and localhost) signed by it, valid or expired. Used by the SeaweedFS (S3 over HTTPS) and FTPS servers."""
import os
import subprocess

# P-256 keys: made in milliseconds (an RSA key takes a good part of a second on a busy machine, for every server)
KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _openssl(*arguments, cwd):
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_certificates(directory, expired=False):
    """A CA (ca.pem) and a server certificate for 127.0.0.1 signed by it (server.pem, server.key); returns the paths.

    expired: the server certificate's validity ended on 2020-01-02 (made with `openssl ca`, which takes dates).
    """
    os.makedirs(directory, exist_ok=True)
    _openssl("req", "-x509", *KEY, "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=filesync test CA", cwd=directory)
    _openssl("req", *KEY, "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)
    with open(os.path.join(directory, "san.ext"), "w") as handle:
        handle.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    if not expired:
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=directory)
    else:
        open(os.path.join(directory, "index.txt"), "w").close()
        with open(os.path.join(directory, "ca.cnf"), "w") as handle:
            handle.write("[ca]\ndefault_ca=test\n[test]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\n"
                         "default_md=sha256\npolicy=anything\ncopy_extensions=none\n"
                         "[anything]\ncommonName=supplied\n[ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
        with open(os.path.join(directory, "serial"), "w") as handle:
            handle.write("01\n")
        _openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", "server.csr",
                 "-out", "server.pem", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                 "-extensions", "ext", "-notext", cwd=directory)
    return {name: os.path.join(directory, name) for name in ("ca.pem", "server.pem", "server.key")}
