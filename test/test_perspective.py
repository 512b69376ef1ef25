"""config/filesync.perspective, loaded as rqt loads it (qt_gui's perspective_manager: JSON whose values are Python
reprs, QtCore.QByteArray hex for the window): the plugins it names exist, the plots have two-minute windows of
plot-friendly status fields, the window fits a 1280x800 screen and its dock layout restores with every pane."""
import ast
import json
import os
import xml.etree.ElementTree as ElementTree

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# Plugins of other packages, as their plugin.xml name them (rqt_plot: class "Plot"; rqt_robot_monitor: class
# "RobotMonitor"), with the object name of the widget each adds (PlotWidget; Robot Monitor).
UPSTREAM = {"rqt_plot/Plot": "PlotWidget", "rqt_robot_monitor/RobotMonitor": "Robot Monitor"}


def _import_value(value):
    """qt_gui's PerspectiveManager._import_value: eval of the repr, with QtCore in scope."""
    from PyQt5 import QtCore  # noqa: F401 (the reprs name it)
    if value["type"] == "repr":
        return eval(value["repr"])
    if value["type"] == "repr(QByteArray.hex)":
        return QtCore.QByteArray.fromHex(eval(value["repr(QByteArray.hex)"]))
    raise AssertionError(f"unknown serialization type {value['type']}")


def _convert(data):
    data["keys"] = {key: _import_value(value) for key, value in data.get("keys", {}).items()}
    for group in data.get("groups", {}).values():
        _convert(group)
    return data


@pytest.fixture(scope="module")
def perspective():
    with open(os.path.join(ROOT, "config", "filesync.perspective"), encoding="utf-8") as handle:
        return _convert(json.loads(handle.read()))


def _status_fields():
    fields = {}
    with open(os.path.join(ROOT, "msg", "Status.msg"), encoding="utf-8") as handle:
        for line in handle:
            words = line.split("#")[0].split()
            if len(words) == 2:
                fields[words[1]] = words[0]
    return fields


def test_the_plugins_it_names_exist(perspective):
    manager = perspective["groups"]["pluginmanager"]
    running = manager["keys"]["running-plugins"]
    assert running == {"filesync/Filesync": [1], "rqt_plot/Plot": [1, 2], "rqt_robot_monitor/RobotMonitor": [1]}
    for plugin, serials in running.items():
        for serial in serials:
            assert f"plugin__{plugin.replace('/', '__')}__{serial}" in manager["groups"]
    # filesync's own: exported in package.xml, declared in plugin.xml, a class in the module it names
    export = ElementTree.parse(os.path.join(ROOT, "package.xml")).find("export/rqt_gui")
    assert export is not None and export.get("plugin") == "${prefix}/plugin.xml"
    declared = ElementTree.parse(os.path.join(ROOT, "plugin.xml")).getroot()
    entry = declared.find("class[@name='Filesync']")
    assert entry.get("base_class_type") == "rqt_gui_py::Plugin"
    assert entry.find("qtgui/label").text == "filesync"
    module, class_name = entry.get("type").rsplit(".", 1)
    with open(os.path.join(ROOT, declared.get("path"), *module.split(".")) + ".py", encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    assert class_name in {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    for plugin in running:
        assert plugin == "filesync/Filesync" or plugin in UPSTREAM


def test_the_plots_show_two_minutes_of_plot_friendly_fields(perspective):
    groups = perspective["groups"]["pluginmanager"]["groups"]
    fields = _status_fields()
    plotted = []
    for serial in (1, 2):
        settings = groups[f"plugin__rqt_plot__Plot__{serial}"]["groups"]["plugin"]["keys"]
        low, high = settings["x_limits"]
        assert high - low == 120.0, "rqt_plot keeps this width while it scrolls: two minutes of a 1 Hz topic"
        assert settings["autoscroll"] is True and len(settings["y_limits"]) == 2
        topics = settings["topics"]
        topics = [topics] if isinstance(topics, str) else topics  # rqt's ini_helper packs one topic as a string
        plotted += topics
    assert plotted == ["/filesync/status/rate_kib_s", "/filesync/status/mib_to_move"]
    for topic in plotted:
        assert fields[topic.rsplit("/", 1)[1]] == "float64"


def test_the_window_fits_1280x800_and_restores_every_pane(perspective, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    from PyQt5.QtCore import Qt
    from PyQt5.QtWidgets import QApplication, QDockWidget, QMainWindow, QWidget
    from filesync.ui.perspective import dock_name
    from filesync.ui.widget import StatusWidget
    application = QApplication.instance() or QApplication([])
    assert StatusWidget().objectName() == "FilesyncWidget"  # the dock name rqt gives the plugin's widget
    window = QMainWindow()
    window.setObjectName("MainWindow")
    docks = {}
    for plugin, serials in perspective["groups"]["pluginmanager"]["keys"]["running-plugins"].items():
        for serial in serials:
            dock = QDockWidget()
            dock.setObjectName(dock_name(plugin, serial))
            dock.setWidget(QWidget())
            window.addDockWidget(Qt.BottomDockWidgetArea, dock)  # where qt_gui adds a plugin's dock at first
            docks[dock.objectName()] = dock
    keys = perspective["groups"]["mainwindow"]["keys"]
    assert window.restoreGeometry(keys["geometry"])
    window.show()
    assert window.restoreState(keys["state"])  # qt_gui restores the state once the plugins' docks are there
    application.processEvents()
    frame = window.frameGeometry()
    assert frame.width() <= 1280 and frame.height() <= 800 and window.width() >= 1000, frame
    for name, dock in docks.items():
        assert dock.isVisible() and dock.width() > 200 and dock.height() > 150, (name, dock.geometry())
    left = docks["filesync__Filesync__1__FilesyncWidget"]
    assert left.height() > 600 and all(left.x() < dock.x() for dock in docks.values() if dock is not left)
    window.close()
