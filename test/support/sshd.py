"""Debian's OpenSSH sshd for tests: started on a free 127.0.0.1 port with its own sshd_config, host key, user and
authorized key under a temporary directory, in the foreground (`-D -e`), killed (its whole process group, sessions
included) in stop().

The user: sshd (UsePAM no) checks a password against the shadow file, and root's password must not be touched, so
sshd runs in a mount namespace of its own (`unshare --mount`) where copies of /etc/passwd, /etc/group and /etc/shadow
with one more user, `sftptest` (uid/gid 4242, a password set here, home under the directory), are bind-mounted over
the real ones. Nothing on the machine changes and no other process sees the user; the storage directory is chowned
to it. Being another uid than the test's, it also meets permission checks (root passes them all).
Needs root (sshd's privilege separation, the mount namespace); Debian's unit makes /run/sshd, which start() does too.

At log_level VERBOSE (the default) sftp-server logs every request it serves (open, fsync, rename, posix-rename,
remove) to a file: requests().
"""
import os
import shlex
import signal
import socket
import shutil
import subprocess
import tempfile
import time

SSHD = "/usr/sbin/sshd"
USER = "sftptest"
UID = GID = 4242
PASSWORD = "sftp-Test-pw-7Qx"


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path, kind="ed25519", passphrase=""):
    """A new key pair at `path` and `path`.pub (ssh-keygen); returns the public key line."""
    for old in (path, path + ".pub"):
        if os.path.exists(old):
            os.remove(old)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "filesync-test", "-f", path],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    with open(path + ".pub") as handle:
        return handle.read().strip()


def fingerprint(public_key_path) -> str:
    """The key's SHA256:... fingerprint as `ssh-keygen -l` prints it."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", public_key_path], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


class Sshd:
    """One sshd with its files under `directory`: start(), stop() (kill), start() again on the same port.

    storage: the user's files (the device root is its absolute path); client_key: a key in authorized_keys;
    known_hosts: a file naming the host key for [127.0.0.1]:port; host_fingerprint: its SHA256:... fingerprint.
    """

    def __init__(self, directory, log_level="VERBOSE"):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.log_level = log_level
        # The user's side (home, files, authorized_keys) lives where uid 4242 can reach it: pytest's tmp_path is
        # under a 0700 folder of root's. remove() deletes it.
        self.public = tempfile.mkdtemp(prefix="filesync-sshd.")
        os.chmod(self.public, 0o711)
        self.home = os.path.join(self.public, "home")
        self.storage = os.path.join(self.home, "files")
        os.makedirs(self.storage, exist_ok=True)
        self.port = free_port()
        self.process = None
        self.output = os.path.join(self.directory, "server.out")
        self.host_key = os.path.join(self.directory, "host_ed25519")
        self.client_key = os.path.join(self.directory, "client_ed25519")
        self.known_hosts = os.path.join(self.directory, "known_hosts")
        self.authorized_keys = os.path.join(self.public, "authorized_keys")
        self.sftp_log = os.path.join(self.public, "sftp-server.log")
        keygen(self.host_key)
        with open(self.authorized_keys, "w") as handle:
            handle.write(keygen(self.client_key) + "\n")
        self.write_known_hosts()
        self._write_accounts()
        open(self.sftp_log, "a").close()
        for path in (self.home, self.storage, self.sftp_log):
            os.chown(path, UID, GID)

    @property
    def host_fingerprint(self):
        """The host key's fingerprint, SHA256:..."""
        return fingerprint(self.host_key + ".pub")

    def write_known_hosts(self, path=None):
        """A known_hosts file naming this server's host key (at `path`, default self.known_hosts); returns its path."""
        path = path or self.known_hosts
        with open(self.host_key + ".pub") as handle:
            kind, key = handle.read().split()[:2]
        with open(path, "w") as handle:
            handle.write(f"[127.0.0.1]:{self.port} {kind} {key}\n")
        return path

    def new_host_key(self):
        """Give the server another host key (as a reinstalled or impersonated host would); restart to use it."""
        keygen(self.host_key)

    def _write_accounts(self):
        hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=PASSWORD, check=True,
                                capture_output=True, text=True).stdout.strip()
        accounts = os.path.join(self.directory, "accounts")
        os.makedirs(accounts, exist_ok=True)
        additions = {"passwd": f"{USER}:x:{UID}:{GID}:filesync test:{self.home}:/bin/sh\n",
                     "group": f"{USER}:x:{GID}:\n", "shadow": f"{USER}:{hashed}:20000:0:99999:7:::\n"}
        self.accounts = {}
        for name, line in additions.items():
            with open(f"/etc/{name}") as handle:
                original = handle.read()
            copy = os.path.join(accounts, name)
            with open(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if name == "shadow" else 0o644),
                      "w") as handle:
                handle.write(original.rstrip("\n") + "\n" + line)
            self.accounts[name] = copy

    def _config(self):
        path = os.path.join(self.directory, "sshd_config")
        lines = [
            f"Port {self.port}", "ListenAddress 127.0.0.1", "AddressFamily inet", f"HostKey {self.host_key}",
            f"PidFile {self.directory}/sshd.pid", "UsePAM no", "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",  # the key file is under /tmp, which is world-writable (sticky): fine for a test
            "PermitRootLogin no", f"AllowUsers {USER}", "UseDNS no", "MaxAuthTries 6", "MaxStartups 50",
            "MaxSessions 50", "LoginGraceTime 20", f"LogLevel {self.log_level}",
            # sftp-server (not internal-sftp, whose log goes to syslog) with its log on stderr, which the user's
            # shell sends to a file of ours: requests() reads it
            f"Subsystem sftp /usr/lib/openssh/sftp-server -e -l {self.log_level} 2>>{self.sftp_log}",
        ]
        with open(path, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return path

    def command(self):
        """unshare + bind mounts of the account copies + sshd in the foreground, logging to stderr."""
        mounts = " && ".join(f"mount --bind {shlex.quote(copy)} /etc/{name}" for name, copy in self.accounts.items())
        sshd = shlex.join([SSHD, "-D", "-e", "-f", self._config()])
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{mounts} && exec {sshd}"]

    def start(self, timeout=20):
        """Start (on the same port as before) and wait until it greets with its SSH banner."""
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.output, "ab") as log:
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                        if connection.recv(8).startswith(b"SSH-"):
                            return self
                except OSError:
                    time.sleep(0.05)
            time.sleep(0.2)  # it exited: the port may linger for a moment after a kill
        self.stop()
        raise RuntimeError(f"sshd did not start on 127.0.0.1:{self.port}:\n{self.log()[-2000:]}")

    def stop(self):
        """Kill sshd and its sessions (as a crash or a pulled cable would) and wait for it."""
        if self.process is not None:
            self.kill_sessions()  # each session calls setsid(): not in sshd's process group
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
            self.process = None

    def remove(self):
        """stop(), then delete the user's files (outside `directory`, see __init__)."""
        self.stop()
        shutil.rmtree(self.public, ignore_errors=True)

    def kill_sessions(self):
        """Kill every session process but the listener: connections drop mid-transfer, the server stays up."""
        if self.process is None:
            return
        for pid in _descendants(self.process.pid):  # unshare execs sh, which execs sshd: the pid is sshd's
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def requests(self) -> str:
        """What the sftp-server sessions logged (at VERBOSE: every open, fsync, rename, posix-rename, remove...)."""
        try:
            with open(self.sftp_log, "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log(self) -> str:
        """What sshd wrote so far."""
        with open(self.output, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.remove()

    def options(self, auth="key", **extra):
        """Options for an `sftp` source or target on the storage directory, with key or password authentication."""
        options = {"kind": "sftp", "host": "127.0.0.1", "port": self.port, "user": USER, "root": self.storage,
                   "known_hosts": self.known_hosts, "timeout": 10.0}
        if auth == "key":
            options["key_file"] = self.client_key
        else:
            options["password"] = PASSWORD
        return {**options, **extra}

    def own(self, path):
        """Give `path` (made by the test, as root) to the server's user, as if it had made it."""
        for root, directories, files in os.walk(path):
            for name in directories + files:
                os.lchown(os.path.join(root, name), UID, GID)
        os.lchown(path, UID, GID)


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _descendants(pid):
    found = []
    for child in _children(pid):
        found.append(child)
        found.extend(_descendants(child))
    return found
