# filesync: `make run` sets everything up and runs the embedded default; `make test` runs the whole suite.
# Debian bookworm, as root. Every step installs what it needs, so a fresh machine needs nothing else.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(abspath .)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
# The catkin workspace links to this folder, so it must live outside it (ROS's resource search follows links).
WS := $(HOME)/.cache/filesync/ws-$(shell echo $(ROOT) | md5sum | cut -c1-8)
STAMPS := $(ROOT)/build/stamps
ROS_ENV := set +u && source $(WS)/devel/setup.bash

# What filesync runs with (`make run`, and so a companion computer).
APT_PACKAGES := ros-core-dev python3-rospy python3-rostest python3-roslaunch python3-rostopic python3-rosservice \
  python3-rosnode python3-rosmsg rosbash catkin ros-message-generation ros-std-msgs ros-std-srvs ros-diagnostic-msgs \
  python3-diagnostic-updater python3-genpy python3-yaml python3-requests python3-pyudev \
  python3-venv python3-pip exfatprogs exfat-fuse util-linux mount iproute2 procps openssl \
  python3-pyqt5 python3-psutil libdiagnostic-aggregator-dev libdiagnostic-aggregator-tools
# What only the tests, the soak and the benchmarks need (`make test` installs them, `make run` does not):
# - servers the tests start on 127.0.0.1 with their own configuration: nginx (the http source), openssh-server (sftp),
#   and the libraries of vsftpd and ProFTPD (proftpd-core, which ships mod_digest.so), which run from their Debian
#   packages unpacked into ~/.cache/filesync/ftp-servers ($(STAMPS)/ftp-servers), not installed (the two conflict);
# - chromium, chromium-driver, python3-selenium (the status page in a real browser); socat (serial links as pty
#   pairs); python3-openssl (pyftpdlib's TLS handler); curl, lftp and rsync (benchmark peers); strace (the fsyncs
#   bench/per_file_costs.py counts); python3-pytest.
# Packages that bring a daemon (nginx, ssh) are installed with a policy-rc.d that keeps Debian from starting them.
TEST_APT_PACKAGES := python3-pytest python3-openssl curl lftp rsync strace nginx openssh-server openssh-client socat \
  chromium chromium-driver python3-selenium xvfb libwrap0 libhiredis0.14 libmemcached11 libmemcachedutil2 libpcre2-posix3

.PHONY: setup setup-test run run-ros2 test test-lib test-ros test-ros2 test-long soak bench bench-many clean install-service \
  docs

setup: $(STAMPS)/build

$(STAMPS)/apt: Makefile
	mkdir -p $(STAMPS)
	missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	touch $@

$(STAMPS)/venv: $(STAMPS)/apt requirements.txt
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

# The tests' packages. A policy-rc.d that answers 101 ("not allowed") keeps Debian's maintainer scripts from starting
# nginx or sshd on a developer's machine while they install; one the machine already has is left alone.
$(STAMPS)/test-apt: $(STAMPS)/venv Makefile requirements-test.txt
	missing=$$(for p in $(TEST_APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	    chmod +x /usr/sbin/policy-rc.d; guard=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; status=$$?; \
	  [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; [ $$status -eq 0 ]; fi
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

setup-test: setup $(STAMPS)/test-apt $(STAMPS)/ftp-servers $(STAMPS)/moto-venv

# moto's S3 server, the tests' second S3 engine, in a venv of its own: it pulls a cryptography that Debian's pyOpenSSL
# (pyftpdlib's TLS) cannot import, and the tests run filesync with the libraries `make run` gives it.
MOTO_VENV := $(ROOT)/.venv-moto
$(STAMPS)/moto-venv: $(STAMPS)/apt requirements-moto.txt
	[ -x $(MOTO_VENV)/bin/python ] || /usr/bin/python3 -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-moto.txt
	touch $@

$(STAMPS)/build: $(STAMPS)/venv Makefile package.xml CMakeLists.txt setup.py $(wildcard msg/*.msg srv/*.srv)
	mkdir -p $(WS)/src
	ln -sfn $(ROOT) $(WS)/src/filesync
	cd $(WS) && catkin_make -DPYTHON_EXECUTABLE=$(PY) -DCATKIN_ENABLE_TESTING=ON > $(ROOT)/build/catkin.log 2>&1 \
	  || { tail -40 $(ROOT)/build/catkin.log; exit 1; }
	touch $@

run: setup
	mkdir -p $(HOME)/filesync/inbox
	@echo "filesync: drop files into $(HOME)/filesync/inbox; they appear in $(HOME)/filesync/ftp_root. Ctrl-C stops."
	$(ROS_ENV) && exec roslaunch filesync sync.launch

test: setup-test
	$(MAKE) --no-print-directory test-lib test-ros test-ros2

# vsftpd and ProFTPD for the FTP tests: `apt-get download` + `dpkg-deb -x` (see test/support/ftp_servers.py).
$(STAMPS)/ftp-servers: $(STAMPS)/test-apt test/support/ftp_servers.py
	/usr/bin/python3 test/support/ftp_servers.py --extract
	touch $@

test-lib: setup-test
	$(ROS_ENV) && cd $(ROOT) && $(PY) -m pytest -q test

# Every rostest runs even after one failed; the failed cases' reasons are printed last (CI shows the end of a run).
test-ros: setup-test
	failed=""; \
	($(ROS_ENV) && rostest filesync nodes.test) || failed="$$failed nodes"; \
	($(ROS_ENV) && rostest filesync status.test) || failed="$$failed status"; \
	($(MAVROS_ENV) && rostest filesync mavros.test) || failed="$$failed mavros_source"; \
	[ -z "$$failed" ] || { $(PY) test/support/rostest_failures.py $$failed; exit 1; }

# Start filesync at boot: `make install-service [SERVICE_CONFIG=/path/to/your.yaml]` (as root).
SERVICE_CONFIG ?= $(ROOT)/config/default.yaml
UNIT := /etc/systemd/system/filesync.service
install-service: setup
	PYTHONPATH=$(ROOT)/src $(PY) -m filesync.service --config $(SERVICE_CONFIG) --workspace $(WS) --output $(UNIT)
	if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then \
	  systemctl daemon-reload && systemctl enable --now filesync.service; \
	else echo "systemd is not running here: $(UNIT) is written; enable it with systemctl enable --now filesync"; fi

# docs/devices/<kind>.md: rewrite each page's options tables from the code's Option declarations (the prose around
# them is kept); test/test_device_docs.py fails while a committed page differs.
docs: setup
	PYTHONPATH=$(ROOT)/src $(PY) -m filesync.docs $(ROOT)/docs/devices

# Tests too long for every CI run: the 50 MB log over MAVLink FTP (about 7 minutes at MAVSDK's pace), and the device
# conformance suite against MAVSDK's MAVLink FTP (about 2.5 minutes).
test-long: setup-test
	$(ROS_ENV) && cd $(ROOT) && FILESYNC_LONG_TESTS=1 $(PY) -m pytest -q test/test_mavlink_source.py
	$(ROS_ENV) && cd $(ROOT) && FILESYNC_LONG_TESTS=1 $(PY) -m pytest -q test/contract -k mavlink

# Benchmarks against curl and lftp, node memory, idle CPU, the ledger at 100,000 files, MAVLink FTP against pymavlink:
# one table (docs/benchmarks.md).
bench: setup-test
	$(ROS_ENV) && cd $(ROOT) && timeout -k 30 1500 $(PY) bench/run.py
	$(MAKE) --no-print-directory bench-many

# Many small files, near and far (issue 18): against rclone copy, lftp mirror -R and rsync -a --fsync, S3 and SFTP
# over a 50 ms round trip; then what one small file costs per device (round trips, fsyncs, ledger calls); then each
# node's memory with 100,000 files registered.
bench-many: setup-test
	$(ROS_ENV) && cd $(ROOT) && timeout -k 30 2400 $(PY) bench/many_files.py
	$(ROS_ENV) && cd $(ROOT) && timeout -k 30 600 $(PY) bench/per_file_costs.py
	$(ROS_ENV) && cd $(ROOT) && timeout -k 30 900 $(PY) bench/registered_memory.py

# The 20-minute fault soak through every device (folders, an exFAT drive, MAVLink FTP, FTP, Flight Review): kill -9
# of nodes, FTP and web server outages, drive unplugs, 20% MAVLink loss, HTTP 5xx, a full staging disk; prints its seed.
# Replay one: make soak SOAK_SEED=1234
SOAK_SEED ?=
soak: setup-test
	$(ROS_ENV) && cd $(ROOT) && timeout -k 30 1230 $(PY) test/support/soak.py --minutes 20 $(if $(SOAK_SEED),--seed $(SOAK_SEED))

clean:
	rm -rf build $(WS) $(ROS2_WS)

# A test-only workspace with test/mavros_msgs (a copy of mavros_msgs' FTP types and State, md5sums of 1.21.0), chained
# on the filesync workspace; never installed. mavros.test runs in it.
MAVROS_MSGS_WS := $(HOME)/.cache/filesync/mavros-msgs-ws-$(shell echo $(ROOT) | md5sum | cut -c1-8)
MAVROS_ENV := set +u && source $(MAVROS_MSGS_WS)/devel/setup.bash
.PHONY: test-mavros-msgs-ws
test-mavros-msgs-ws: $(STAMPS)/mavros-msgs-ws
test-lib test-ros: test-mavros-msgs-ws
$(STAMPS)/mavros-msgs-ws: $(STAMPS)/build $(wildcard test/mavros_msgs/*.* test/mavros_msgs/msg/*.msg test/mavros_msgs/srv/*.srv)
	mkdir -p $(MAVROS_MSGS_WS)/src
	ln -sfn $(ROOT)/test/mavros_msgs $(MAVROS_MSGS_WS)/src/mavros_msgs
	$(ROS_ENV) && cd $(MAVROS_MSGS_WS) && catkin_make -DPYTHON_EXECUTABLE=$(PY) > $(ROOT)/build/mavros-msgs.log 2>&1 \
	  || { tail -40 $(ROOT)/build/mavros-msgs.log; exit 1; }
	touch $@

# ROS 2 Jazzy (rclpy) from PyPI's wheels, in a venv of its own made without Debian's site packages (its rclpy and
# messages must not shadow Debian's rospy, nor ROS 1's see them); named by the requirements' hash, so a changed list
# makes a new one. filesync_interfaces (ros2/) is built into ROS2_WS with colcon, outside the repository like the catkin
# workspace, with ros2/filesync (the nodes' executables, launch/sync.launch.py and config/ as an ament package).
# ROS2_ENV puts them on the paths; each test run picks its own ROS_DOMAIN_ID (test/conftest.py).
ROS2_VENV_ID := $(shell cat $(ROOT)/requirements-ros2.txt $(ROOT)/requirements.txt | md5sum | cut -c1-8)
ROS2_VENV := $(HOME)/.cache/filesync/ros2-venv-$(ROS2_VENV_ID)
ROS2_PY := $(ROS2_VENV)/bin/python3
# one workspace per checkout and venv: CMake's cache holds the venv's paths
ROS2_WS := $(HOME)/.cache/filesync/ros2-ws-$(shell echo $(ROOT) | md5sum | cut -c1-8)-$(ROS2_VENV_ID)
ROS2_INSTALL := $(ROS2_WS)/install/filesync_interfaces
# test/ros2_mavros_msgs: a test-only copy of MAVROS 2's FTP service types and State, for the mavros device's tests
ROS2_MAVROS_MSGS := $(ROS2_WS)/install/mavros_msgs
# (install/filesync, the package `ros2 launch` finds, is on AMENT_PREFIX_PATH only: its copy of src/filesync is not
# on PYTHONPATH, the repository's is)
ROS2_ENV := export PATH=$(ROS2_WS)/install/filesync/bin:$(ROS2_VENV)/bin:$$PATH AMENT_PREFIX_PATH=$(ROS2_WS)/install/filesync:$(ROS2_INSTALL):$(ROS2_MAVROS_MSGS):$(ROS2_VENV) \
  PYTHONPATH=$(ROS2_INSTALL)/lib/python3.11/site-packages:$(ROS2_MAVROS_MSGS)/lib/python3.11/site-packages:$(ROOT)/src \
  LD_LIBRARY_PATH=$(ROS2_INSTALL)/lib:$(ROS2_MAVROS_MSGS)/lib:$(ROS2_VENV)/lib \
  ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST

# What colcon needs to build the interfaces' C and C++ type support and Python extension (named, not left to come with
# ROS 1's packages).
ROS2_APT_PACKAGES := cmake g++ python3-dev python3-venv

$(ROS2_VENV)/.installed: requirements-ros2.txt requirements.txt $(STAMPS)/apt
	missing=$$(for p in $(ROS2_APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	[ -x $(ROS2_PY) ] || /usr/bin/python3 -m venv $(ROS2_VENV)
	$(ROS2_PY) -m pip install -q --disable-pip-version-check -r requirements-ros2.txt
	touch $@

$(ROS2_WS)/.built: $(ROS2_VENV)/.installed $(wildcard ros2/*/* msg/*.msg srv/*.srv launch/sync.launch.py \
  test/ros2_mavros_msgs/* test/ros2_mavros_msgs/*/*)
	mkdir -p $(ROS2_WS) $(STAMPS)
	export PATH=$(ROS2_VENV)/bin:$$PATH AMENT_PREFIX_PATH=$(ROS2_VENV) CMAKE_PREFIX_PATH=$(ROS2_VENV) && \
	  cd $(ROS2_WS) && colcon --log-base log build --base-paths $(ROOT)/ros2 $(ROOT)/test/ros2_mavros_msgs \
	  --build-base build --install-base install \
	  --cmake-args -DPython3_EXECUTABLE=$(ROS2_PY) -DBUILD_TESTING=OFF > $(ROOT)/build/ros2-packages.log 2>&1 \
	  || { tail -40 $(ROOT)/build/ros2-packages.log; exit 1; }
	touch $@

.PHONY: setup-ros2
setup-ros2: $(ROS2_WS)/.built

test-ros2: setup-ros2
	$(ROS2_ENV) && cd $(ROOT) && FILESYNC_ROS2=1 $(ROS2_PY) -m pytest -q test/ros2

run-ros2: setup-ros2
	mkdir -p $(HOME)/filesync/inbox
	@echo "filesync on ROS 2: drop files into $(HOME)/filesync/inbox; they appear in $(HOME)/filesync/ftp_root. Ctrl-C stops."
	$(ROS2_ENV) && exec filesync-ros2 run $(ROOT)/config/default.yaml
