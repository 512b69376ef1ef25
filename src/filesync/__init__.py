"""filesync: move files from hard-to-reach sources through local staging to verified targets.

The library runs without ROS; filesync.ros holds the thin node adapters.
"""
