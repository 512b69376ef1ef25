"""The filesync status as a PyQt5 widget: pipelines, transfers with progress bars, parked files with Retry and Forget,
links, staging. It needs neither ROS nor rqt: it shows the views of filesync.status.status_view() that it is given
(view_arrived may be emitted from any thread) and acts through an object with retry(id), forget(id) and retry_all(),
each returning (ok, message). The rqt plugin and the stand-alone window wrap it.

Names and errors come from devices and people (a file may be called `<font size=7>x</font>`): every label is plain
text, and every tooltip is plain text made into Qt's rich text (a tooltip that looks like HTML is rendered as such).
"""
import html
import threading

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QColor
from PyQt5.QtWidgets import (QAbstractItemView, QFrame, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                             QPushButton, QScrollArea, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

STATE_COLOURS = {"up": "#1b7f3b", "down": "#b3261e", "unknown": "#7a7a7a"}
PARKED_TEXT, PARKED_RETRY = 1, 3  # the parked files' columns: the name over the reason; Retry, then Forget


def _table(headers, stretch_column):
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.NoSelection)
    table.setFocusPolicy(Qt.NoFocus)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeToContents)
    header.setSectionResizeMode(stretch_column, QHeaderView.Stretch)
    return table


def plain_tooltip(text):
    """A tooltip that shows `text` as it is, spaces and lines kept (Qt renders a tooltip that looks like HTML as rich
    text, so it is made rich text here, escaped)."""
    return f'<p style="white-space:pre-wrap">{html.escape(str(text))}</p>' if text != "" else ""


def _label(text=""):
    label = QLabel(text)
    label.setTextFormat(Qt.PlainText)
    return label


def _item(text, tooltip=None):
    item = QTableWidgetItem(str(text))
    item.setToolTip(plain_tooltip(tooltip or text))
    return item


def _fit_height(table, rows_min=1, rows_max=8):
    """Tables as tall as their rows (within bounds), so short lists leave room for the others."""
    rows = max(rows_min, min(rows_max, table.rowCount()))
    height = table.horizontalHeader().height() + 2 * table.frameWidth()
    height += sum(table.rowHeight(row) for row in range(min(rows, table.rowCount())))
    height += max(0, rows - table.rowCount()) * table.verticalHeader().defaultSectionSize()
    table.setFixedHeight(height)


class StatusWidget(QWidget):
    """The operator's view of filesync, fed with status views."""

    view_arrived = pyqtSignal(dict)  # emit from any thread; shown in the GUI thread
    _action_done = pyqtSignal(bool, str)

    def __init__(self, actions=None, parent=None):
        super().__init__(parent)
        self.setObjectName("FilesyncWidget")
        self.setWindowTitle("filesync")
        self.actions = actions
        self.view = None
        # the content scrolls inside the widget: its tables keep their rows' height, and without a scroll area their
        # sum was the pane's minimum height, which made rqt's window 887 px tall on an 800 px screen
        content = QWidget()
        layout = QVBoxLayout(content)
        self.summary = _label("waiting for /filesync/status ...")
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.last_error = _label()
        self.last_error.setWordWrap(True)
        self.last_error.setStyleSheet("color: #b3261e")
        self.last_error.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.summary)
        layout.addWidget(self.last_error)

        self.pipelines = _table(["pipeline", "files", "waiting", "rate"], 1)
        layout.addWidget(self._group("Pipelines", self.pipelines))
        self.transfers = _table(["", "device", "file", "progress", "done", "rate", "ETA"], 2)
        self.transfers.horizontalHeader().setSectionResizeMode(3, QHeaderView.Fixed)
        self.transfers.setColumnWidth(3, 160)
        layout.addWidget(self._group("Transfers", self.transfers))

        # the reason is what the operator came for: under the file's name, in the column that stretches, wrapped and
        # shown whole (in a column of its own beside a long name, it was some 30 px wide in rqt's 1260 px window)
        self.parked = _table(["id", "file and reason", "where", "", ""], PARKED_TEXT)
        self.parked.setWordWrap(True)
        self.retry_all = QPushButton("Retry all")
        self.retry_all.clicked.connect(lambda: self._act("retry_all"))
        self.parked_title = _label("none")
        parked_head = QHBoxLayout()
        parked_head.addWidget(self.parked_title, 1)
        parked_head.addWidget(self.retry_all)
        self.action_result = _label()
        self.action_result.setWordWrap(True)
        layout.addWidget(self._group("Parked files (wait for a person)", self.parked, parked_head, self.action_result))

        self.links = _table(["device", "state", "since", "why"], 3)
        layout.addWidget(self._group("Sources and targets", self.links))
        self.staging = _label()
        layout.addWidget(self.staging)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self.view_arrived.connect(self.show_view)
        self._action_done.connect(self._show_action_result)
        self._update_enabled()

    @staticmethod
    def _group(title, table, head=None, foot=None):
        box = QGroupBox(title)
        inner = QVBoxLayout(box)
        if head is not None:
            inner.addLayout(head)
        inner.addWidget(table)
        if foot is not None:
            inner.addWidget(foot)
        return box

    def show_view(self, view):
        """Show one status view (in the GUI thread)."""
        self.view = view
        ledger = f"LEDGER {view['ledger_problem']} - " if view["ledger_problem"] else ""
        self.summary.setText(f"{ledger}rate {view['rate']}, {view['to_move']} still to move, "
                             f"{view['files_parked']} parked; staging {view['staging']}")
        self.last_error.setText(f"last error ({view['last_error_when']}): {view['last_error']}"
                                if view["last_error"] else "")

        self.pipelines.setRowCount(len(view["pipelines"]))
        for row, pipeline in enumerate(view["pipelines"]):
            for column, text in enumerate((f"{pipeline['source']} \u2192 {', '.join(pipeline['targets'])}",
                                           pipeline["counts"], pipeline["waiting"], pipeline["rate"])):
                self.pipelines.setItem(row, column, _item(text))

        self.transfers.setRowCount(len(view["transfers"]))
        for row, transfer in enumerate(view["transfers"]):
            for column, text in ((0, transfer["kind"]), (1, transfer["device"]), (2, transfer["path"]),
                                 (4, transfer["amount"]), (5, transfer["rate"]), (6, transfer["eta"])):
                self.transfers.setItem(row, column, _item(text))
            bar = self.transfers.cellWidget(row, 3)
            if bar is None:
                bar = QProgressBar()
                bar.setRange(0, 1000)
                self.transfers.setCellWidget(row, 3, bar)
            bar.setValue(int(round(transfer["percent"] * 10)))
            bar.setFormat(f"{transfer['percent']:.0f} %")
        if not view["transfers"]:
            self.transfers.setRowCount(0)

        shown = view["parked"]
        self.parked_title.setText(f"{view['files_parked']} file(s)" + (
            f", the first {len(shown)} listed" if len(shown) < view["files_parked"] else "") if view["files_parked"]
            else "none")
        self.parked.setRowCount(len(shown))
        for row, parked in enumerate(shown):
            name_and_reason = f"{parked['source']}/{parked['path']}\n{parked['reason']}"
            for column, text in enumerate((parked["file_id"], name_and_reason, parked["devices"])):
                self.parked.setItem(row, column, _item(text))
            for column, (label, action) in enumerate((("Retry", "retry"), ("Forget", "forget")), start=PARKED_RETRY):
                name = f"{action}_{parked['file_id']}"
                button = self.parked.cellWidget(row, column)
                if button is None or button.objectName() != name:  # kept while the row shows the same file
                    button = QPushButton(label)
                    button.setObjectName(name)
                    button.clicked.connect(lambda _checked, a=action, i=parked["file_id"]: self._act(a, i))
                    self.parked.setCellWidget(row, column, button)

        self.parked.resizeRowsToContents()

        self.links.setRowCount(len(view["links"]))
        for row, link in enumerate(view["links"]):
            state = _item(link["state"], link["text"])
            state.setForeground(Qt.white)
            state.setBackground(QColor(STATE_COLOURS[link["state"]]))
            why = link["reason"] or (f"last published {link['last_location']}" if link["last_location"] else "")
            for column, item in enumerate((_item(f"{link['role']} {link['name']}"), state, _item(link["since"]),
                                           _item(why))):
                self.links.setItem(row, column, item)

        staging = f"staging: {view['staging']}"
        if view["downloads_held"]:
            staging += f" - {view['downloads_held']}"
        self.staging.setText(staging)
        self.staging.setStyleSheet("color: #b3261e" if view["staging_low"] else "")
        for table, rows in ((self.pipelines, 4), (self.transfers, 6), (self.parked, 6), (self.links, 8)):
            _fit_height(table, rows_max=rows)
        self._update_enabled()

    def _update_enabled(self):
        can_act = self.actions is not None
        self.retry_all.setEnabled(can_act and bool(self.view and self.view["files_parked"]))
        for row in range(self.parked.rowCount()):
            for column in (PARKED_RETRY, PARKED_RETRY + 1):
                button = self.parked.cellWidget(row, column)
                if button is not None:
                    button.setEnabled(can_act)

    def _act(self, action, file_id=None):
        """Run an action off the GUI thread (the ledger may take a moment); the result shows under the list."""
        if self.actions is None:
            return
        self.action_result.setText(f"{action.replace('_', ' ')} {'' if file_id is None else file_id} ...")

        def run():
            try:
                method = getattr(self.actions, action)
                ok, message = method() if file_id is None else method(file_id)
            except Exception as error:  # shown to the operator, never lost in a thread
                ok, message = False, f"{action} failed: {error}"
            self._action_done.emit(ok, message)

        threading.Thread(target=run, name=f"filesync-{action}", daemon=True).start()

    def _show_action_result(self, ok, message):
        self.action_result.setText(message)
        self.action_result.setStyleSheet("" if ok else "color: #b3261e")
