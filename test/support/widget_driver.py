"""Drives the rqt plugin's widget as an operator would, in its own process (the workspace's Python path, where the
generated messages are; pytest's src/ path would hide them), against whatever ROS master the environment names.

    widget_driver.py CLASH_PATH SCREENSHOT.png

Watches a transfer's progress bar move and a parked file's reason, saves the widget's grab() while both show, then
takes the server's clashing file away and clicks the parked file's Retry button. Prints one JSON line of what it saw.
"""
import json
import os
import sys
import time

import rospy
from PyQt5.QtWidgets import QApplication, QProgressBar

from filesync.ros.status_window import connect
from filesync.ui.widget import PARKED_RETRY, PARKED_TEXT, StatusWidget

TIMEOUT = 60.0


def main(clash_path, screenshot):
    application = QApplication([])
    rospy.init_node("widget_driver", anonymous=True, disable_signals=True)
    widget = StatusWidget()
    client = connect(widget)
    widget.resize(1000, 760)
    widget.show()
    seen = {"bar_values": [], "reason": "", "screenshot": False, "retry_result": "", "parked_after_retry": None}
    deadline = time.monotonic() + TIMEOUT

    def pump(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            application.processEvents()
            time.sleep(0.02)

    def bar_value():
        bar = widget.transfers.cellWidget(0, 3) if widget.transfers.rowCount() else None
        return bar.value() if isinstance(bar, QProgressBar) else None

    def parked_reason():  # the name, and under it the reason
        item = widget.parked.item(0, PARKED_TEXT) if widget.parked.rowCount() else None
        return item.text() if item else ""

    # 1. a bar that moves (three distinct values in flight) while the parked file shows its reason
    while time.monotonic() < deadline:
        pump(0.2)
        value = bar_value()
        if value is not None and 0 < value < 1000 and (not seen["bar_values"] or value != seen["bar_values"][-1]):
            seen["bar_values"].append(value)
        seen["reason"] = parked_reason() or seen["reason"]
        if len(seen["bar_values"]) >= 3 and parked_reason() and value is not None and 0 < value < 1000:
            seen["screenshot"] = widget.grab().save(screenshot)
            break
    # 2. Retry puts it back in line: the server's clashing file is gone first, so the upload can succeed
    if seen["reason"]:
        os.remove(clash_path)
        button = widget.parked.cellWidget(0, PARKED_RETRY)
        seen["retry_button"] = button.text()
        button.click()
        while time.monotonic() < deadline and not widget.action_result.text().endswith("back in line"):
            pump(0.1)
        seen["retry_result"] = widget.action_result.text()
        while time.monotonic() < deadline and widget.parked.rowCount():
            pump(0.1)
        seen["parked_after_retry"] = widget.parked.rowCount()
        seen["summary"] = widget.summary.text()
    client.close()
    rospy.signal_shutdown("done")
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
