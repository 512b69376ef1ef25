"""The rqt plugin's widget (offscreen) shows names and errors as they are: a file called `<font size=7>x</font>`
or an error with `<b>` in it is text, never markup, in every label and every tooltip."""
import pytest

NAME = "<font size=7>x</font> & <b>bold</b>.ulg"
ERROR = "upload ftp: <b>refused</b> &amp; <i>closed</i>"


@pytest.fixture
def widget(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    from PyQt5.QtWidgets import QApplication
    from filesync.status import LinkStatus, ParkedFile, PipelineStatus, Status, TransferStatus, status_view
    from filesync.ui.widget import StatusWidget
    application = QApplication.instance() or QApplication([])  # widgets need one, alive while they are
    status = Status(stamp=100.0, pipelines=[PipelineStatus("<i>usb</i>", ["ftp"])],
                    transfers=[TransferStatus(1, "<i>usb</i>", NAME, "upload", "ftp", 1, 10)],
                    links=[LinkStatus("ftp", "target", False, 50.0, ERROR)],
                    parked=[ParkedFile(2, "<i>usb</i>", NAME, 10, ERROR, ["target ftp"])], files_parked=1,
                    last_error=f"upload {NAME}: {ERROR}", last_error_time=99.0, downloads_held=f"held: {NAME}")
    shown = StatusWidget()
    shown.show_view(status_view(status, now=100.0))
    shown._show_action_result(False, f"forget {NAME} failed: {ERROR}")
    yield shown
    shown.deleteLater()
    application.processEvents()


def _as_rendered(text, text_format):
    """The text a person sees for `text` shown with `text_format` (Qt's AutoText: rich when it looks like HTML)."""
    from PyQt5.QtCore import Qt
    from PyQt5.QtGui import QTextDocument
    document = QTextDocument()
    if text_format == Qt.RichText or (text_format == Qt.AutoText and Qt.mightBeRichText(text)):
        document.setHtml(text)
    else:
        document.setPlainText(text)
    return document.toPlainText()


def test_labels_show_names_and_errors_as_text(widget):
    from PyQt5.QtWidgets import QLabel
    labels = {label.text(): label for label in widget.findChildren(QLabel) if label.text()}
    shown = [_as_rendered(text, label.textFormat()) for text, label in labels.items()]
    assert any(f"upload {NAME}: {ERROR}" in text for text in shown), shown  # the last error
    assert any(f"forget {NAME} failed: {ERROR}" in text for text in shown), shown  # an action's answer
    assert any(f"held: {NAME}" in text for text in shown), shown  # why downloads wait
    for text, label in labels.items():
        assert _as_rendered(text, label.textFormat()) == text, text


def test_tooltips_show_names_and_errors_as_text(widget):
    from PyQt5.QtCore import Qt
    tooltips = []
    for table in (widget.pipelines, widget.transfers, widget.parked, widget.links):
        for row in range(table.rowCount()):
            for column in range(table.columnCount()):
                item = table.item(row, column)
                if item is not None:  # the tooltip says what the cell says (or, for a link's state, why)
                    tooltips.append((item.text(), _as_rendered(item.toolTip(), Qt.AutoText)))
    rendered = [tip for _, tip in tooltips]
    assert NAME in rendered and f"<i>usb</i>/{NAME}\n{ERROR}" in rendered, rendered
    assert any(ERROR in tip for tip in rendered if tip.startswith("DOWN")), rendered  # the link's state
    for text, tip in tooltips:
        assert tip == text or text == "down", (text, tip)
