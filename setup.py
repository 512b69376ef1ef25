# Used by catkin_python_setup() only; do not run it by hand.
from catkin_pkg.python_setup import generate_distutils_setup
from setuptools import setup

setup(**generate_distutils_setup(packages=["filesync", "filesync.devices", "filesync.devices.ftp",
                                           "filesync.devices.s3", "filesync.devices.vehicle", "filesync.engine",
                                           "filesync.ledger", "filesync.ros", "filesync.ui"],
                                 package_dir={"": "src"}, package_data={"filesync.ui": ["static/*"]}))
