"""The transfer engine: finder, download, upload and remove workers, driven by the ledger, independent of ROS."""
