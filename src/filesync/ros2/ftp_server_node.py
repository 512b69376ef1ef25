"""The ftp_server node on ROS 2: the bundled pyftpdlib server, bound to 127.0.0.1 unless configured otherwise."""
import threading

from filesync.errors import ConfigError
from filesync.ftpserver import build_server, stopper
from filesync.ros2.node import FilesyncNode


def main():
    """Serve in a thread until shutdown; the main thread sleeps until then."""
    filesync = FilesyncNode("ftp_server")
    settings, log = filesync.config.ftp_server, filesync.node.get_logger()
    if not settings["enabled"]:
        log.info("ftp_server.enabled is false: nothing to serve")
        filesync.wait_for_shutdown()
        filesync.close()
        return
    try:
        server = build_server(settings)
    except ConfigError as error:
        filesync.fail(f"bad configuration: {error}")
    except OSError as error:
        filesync.fail(f"ftp_server: cannot listen on {settings['host']}:{settings['port']}: {error.strerror}")
    stop = stopper(server)  # one blocking serve_forever(): see filesync.ros.ftp_server_node

    def serve():
        try:
            server.serve_forever(timeout=None, blocking=True)
        except Exception as error:  # noqa: BLE001 - any failure of the loop ends the node (the supervisor restarts it)
            log.fatal(f"ftp_server: the server stopped: {error!r}")
            filesync.shutdown("the FTP server stopped")

    thread = threading.Thread(target=serve, name="ftp_server", daemon=True)
    thread.start()
    log.info(f"serving {settings['root']} on {settings['host']}:{settings['port']}")
    filesync.wait_for_shutdown()
    stop()
    thread.join(10)
    filesync.close()


if __name__ == "__main__":
    main()
