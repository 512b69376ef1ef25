"""The rqt plugin (Plugins > filesync): wraps filesync.ui.widget.StatusWidget as the nodes wrap the library.

rqt itself is imported here only, so the widget and the stand-alone window work without it.
"""
from rqt_gui_py.plugin import Plugin

from filesync.ros.status_window import connect
from filesync.ui.widget import StatusWidget


class FilesyncPlugin(Plugin):
    """The filesync status pane, fed from /filesync/status and /filesync/events."""

    def __init__(self, context):
        super().__init__(context)
        self.setObjectName("Filesync")
        self._widget = StatusWidget()
        if context.serial_number() > 1:
            self._widget.setWindowTitle(f"{self._widget.windowTitle()} ({context.serial_number()})")
        context.add_widget(self._widget)
        self._client = connect(self._widget)

    def shutdown_plugin(self):
        """Stop listening when the pane closes."""
        self._client.close()
