"""`rosrun filesync status_window`: the rqt plugin's widget in a window of its own, for machines without rqt
(rqt is not packaged in Debian). The rqt plugin (rqt_plugin.py) wraps the same widget and the same wiring."""
import signal
import sys

import rospy
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication

from filesync.ros.status_client import LedgerActions, StatusClient
from filesync.ui.widget import StatusWidget


def connect(widget):
    """Feed the widget from the topics and give it the ledger's actions; returns the StatusClient (close() it)."""
    widget.actions = LedgerActions()
    return StatusClient(widget.view_arrived.emit)


def main(argv=None):
    """Run the window until it is closed or Ctrl-C."""
    application = QApplication(sys.argv if argv is None else argv)
    rospy.init_node("filesync_status_window", anonymous=True, disable_signals=True)
    widget = StatusWidget()
    client = connect(widget)
    widget.resize(960, 720)
    widget.show()
    signal.signal(signal.SIGINT, lambda *_: application.quit())
    ticker = QTimer()  # lets Python see Ctrl-C while Qt's loop runs; no data is polled
    ticker.start(500)
    ticker.timeout.connect(lambda: None)
    code = application.exec_()
    client.close()
    rospy.signal_shutdown("window closed")
    return code
