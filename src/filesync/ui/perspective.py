"""Writes config/filesync.perspective, the rqt perspective shipped with filesync, on a 1280x800 screen:

    xvfb-run -s "-screen 0 1280x800x24" python -m filesync.ui.perspective config/filesync.perspective

On the left the filesync plugin over the robot monitor (which reads /diagnostics_agg from the aggregator sync.launch
starts); on the right a plot of the rate (KiB/s) over one of what is still to move (MiB, progress within a file
counts), each over the last two minutes (rqt_plot keeps the width of `x_limits` while it scrolls; without them the
window is about a second wide and a 1 Hz topic draws no line) and each some 370 px high (rqt_plot's toolbar and topic
row take about 90 px; at 220 px the axes were 12 px high in real rqt). The window is 1260x740 at the top left, so it
fits a 1280x800 screen with its frame.

rqt stores settings as Python reprs in JSON (qt_gui's perspective_manager); the window's geometry and the dock
layout are QMainWindow.saveGeometry()/saveState() bytes, made here with a QMainWindow holding dock widgets with the
object names qt_gui gives them ("<package>__<plugin>__<serial>__<widget object name>"). saveGeometry() records the
screen's width and Qt 5.15's restoreGeometry() refuses bytes saved on a screen of another size (an 800 px offscreen
screen's bytes left real rqt at its default 706x450): hence the 1280x800 screen, checked below.
"""
import json
import sys

WINDOW = (0, 0, 1260, 740)
PLOT_SECONDS = 120.0
FILESYNC = "filesync/Filesync"
PLOT = "rqt_plot/Plot"
MONITOR = "rqt_robot_monitor/RobotMonitor"
PLOTS = {1: ["/filesync/status/rate_kib_s"], 2: ["/filesync/status/mib_to_move"]}
SCREEN = (1280, 800)
# the object names of the plugins' widgets, which qt_gui prefixes with the plugin instance to name their docks:
# filesync's StatusWidget; rqt_plot's PlotWidget, which names itself "PlotWidget" and then loadUi() renames it after
# plot.ui's top widget, "DataPlotWidget" (seen in real rqt: docks named PlotWidget were never put in place);
# rqt_robot_monitor's RobotMonitorWidget, named "Robot Monitor" after its loadUi()
WIDGETS = {FILESYNC: "FilesyncWidget", PLOT: "DataPlotWidget", MONITOR: "Robot Monitor"}


def dock_name(plugin, serial):
    """The object name qt_gui gives the dock widget of a plugin instance's widget."""
    return f"{plugin.replace('/', '__')}__{serial}__{WIDGETS[plugin]}"


def _repr(value):
    return {"type": "repr", "repr": repr(value)}


def _bytes(value):
    return {"type": "repr(QByteArray.hex)", "repr(QByteArray.hex)": f"QtCore.QByteArray({bytes(value.toHex())!r})"}


def _window_bytes():
    """(geometry, state) of a main window laid out as described above."""
    from PyQt5.QtCore import Qt
    from PyQt5.QtWidgets import QApplication, QDockWidget, QMainWindow, QWidget
    application = QApplication.instance() or QApplication([])
    screen = application.primaryScreen().size()
    if (screen.width(), screen.height()) != SCREEN:
        raise SystemExit(f"the screen is {screen.width()}x{screen.height()}: write the perspective on a "
                         f"{SCREEN[0]}x{SCREEN[1]} screen (xvfb-run -s \"-screen 0 1280x800x24\")")
    window = QMainWindow()
    window.setObjectName("MainWindow")
    window.setDockNestingEnabled(True)
    docks = {}
    for plugin, serial in ((FILESYNC, 1), (PLOT, 1), (PLOT, 2), (MONITOR, 1)):
        dock = QDockWidget(dock_name(plugin, serial))
        dock.setObjectName(dock_name(plugin, serial))
        dock.setWidget(QWidget())
        docks[(plugin, serial)] = dock
    window.addDockWidget(Qt.LeftDockWidgetArea, docks[(FILESYNC, 1)])
    window.splitDockWidget(docks[(FILESYNC, 1)], docks[(MONITOR, 1)], Qt.Vertical)
    window.addDockWidget(Qt.RightDockWidgetArea, docks[(PLOT, 1)])
    window.splitDockWidget(docks[(PLOT, 1)], docks[(PLOT, 2)], Qt.Vertical)
    window.setGeometry(*WINDOW)
    window.show()
    window.resizeDocks([docks[(FILESYNC, 1)], docks[(PLOT, 1)]], [660, 600], Qt.Horizontal)
    window.resizeDocks([docks[(FILESYNC, 1)], docks[(MONITOR, 1)]], [470, 270], Qt.Vertical)
    window.resizeDocks([docks[(PLOT, 1)], docks[(PLOT, 2)]], [370, 370], Qt.Vertical)
    application.processEvents()
    geometry, state = window.saveGeometry(), window.saveState()
    window.close()
    return geometry, state


def build() -> dict:
    """The perspective as rqt's JSON structure."""
    geometry, state = _window_bytes()
    plugins = {}
    for serial, topics in PLOTS.items():
        plugins[f"plugin__rqt_plot__Plot__{serial}"] = {"keys": {}, "groups": {"plugin": {"keys": {
            "plot_type": _repr(1), "autoscroll": _repr(True), "topics": _repr(topics),
            "x_limits": _repr([0.0, PLOT_SECONDS]), "y_limits": _repr([0.0, 1.0])}, "groups": {}}}}
    for plugin in (FILESYNC, MONITOR):
        plugins[f"plugin__{plugin.replace('/', '__')}__1"] = {"keys": {}, "groups": {"plugin": {"keys": {},
                                                                                                 "groups": {}}}}
    running = {FILESYNC: [1], PLOT: sorted(PLOTS), MONITOR: [1]}
    return {"keys": {}, "groups": {
        "mainwindow": {"keys": {"geometry": _bytes(geometry), "state": _bytes(state)}, "groups": {}},
        "pluginmanager": {"keys": {"running-plugins": _repr(running)}, "groups": plugins}}}


def main(argv=None):
    """Write the perspective to the path given."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], "w", encoding="utf-8") as handle:
        handle.write(json.dumps(build(), indent=2, separators=(",", ": ")) + "\n")


if __name__ == "__main__":
    main()
