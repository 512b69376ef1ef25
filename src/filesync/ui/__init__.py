"""What people look at: the PyQt5 status widget (wrapped by the rqt plugin), the browser page and its server.

No ROS here: both are fed the plain view of filesync.status.status_view() and act through a small object with
retry(file_id) and forget(file_id); the ros package wires them to the topics and the ledger's services.
"""
