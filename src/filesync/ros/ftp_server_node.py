"""The ftp_server node: the bundled pyftpdlib server, bound to 127.0.0.1 unless configured otherwise."""
import threading

import rospy

from filesync.errors import ConfigError
from filesync.ftpserver import build_server, stopper
from filesync.ros.node import fail, start_node, wait_for_shutdown


def main():
    """Serve in a thread until shutdown; the main thread sleeps until then."""
    config = start_node("ftp_server")
    if not config.ftp_server["enabled"]:
        rospy.loginfo("ftp_server.enabled is false: nothing to serve")
        wait_for_shutdown()
        return
    try:
        server = build_server(config.ftp_server)
    except ConfigError as error:
        fail(f"bad configuration: {error}")
    except OSError as error:
        fail(f"ftp_server: cannot listen on {config.ftp_server['host']}:{config.ftp_server['port']}: {error.strerror}")
    # One blocking serve_forever(), not serve_forever(blocking=False) in a loop: pyftpdlib (2.2.0) logs its
    # ">>> starting FTP server <<<" banner on every call, ~10,000 lines a second during a transfer, and a polled loop
    # wakes the idle node. Its loop sleeps until a socket or a scheduled call needs it; stop() has it close_all().
    stop = stopper(server)
    thread = threading.Thread(target=_serve, args=(server,), name="ftp_server", daemon=True)
    thread.start()
    rospy.loginfo(f"serving {config.ftp_server['root']} on {config.ftp_server['host']}:{config.ftp_server['port']}")
    wait_for_shutdown()
    stop()
    thread.join(10)


def _serve(server):
    """The server's loop; if it fails, shut the node down (roslaunch respawns it) instead of living on deaf."""
    try:
        server.serve_forever(timeout=None, blocking=True)
    except Exception as error:  # noqa: BLE001 - any failure of the loop ends the node
        rospy.logfatal(f"ftp_server: the server stopped: {error!r}")
        rospy.signal_shutdown("the FTP server stopped")
