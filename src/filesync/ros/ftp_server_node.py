"""The ftp_server node: the bundled pyftpdlib server, bound to 127.0.0.1 unless configured otherwise."""
import rospy

from filesync.errors import ConfigError
from filesync.ftpserver import build_server
from filesync.ros.node import fail, start_node, wait_for_shutdown


def main():
    """Serve until shutdown; the loop wakes twice a second to notice it."""
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
    rospy.loginfo(f"serving {config.ftp_server['root']} on {config.ftp_server['host']}:{config.ftp_server['port']}")
    while not rospy.is_shutdown():
        server.serve_forever(timeout=0.5, blocking=False)
    server.close_all()
