#!/usr/bin/env python3
"""A stand-in for MAVROS's FTP plugin and /mavros/state, for tests: MAVROS cannot be installed here (it is in neither
Debian's nor PyPI's registries), so this ROS node offers its service API exactly and relays to a real MAVLink FTP
server (the MAVSDK autopilot of support.mavsdk_autopilot) over MAVLink, as MAVROS would.

Run as `fake_mavros.py URL MODE __name:=mavros` (URL: pymavlink's, e.g. udpout:127.0.0.1:PORT; MODE: `fixed` or
`legacy`). With node name `mavros` the services are the twelve of MAVROS's ftp plugin, /mavros/ftp/{list, open,
close, read, write, mkdir, rmdir, remove, truncate, reset, rename, checksum}, with the types of mavros_msgs (the test
copy in test/mavros_msgs, same md5sums as 1.21.0) and std_srvs/Empty for reset.

What it reproduces of MAVROS 1.x (mavros/src/plugins/ftp.cpp at 1.21.0, identical on 'master', and FACTS.md):
- One operation at a time: a call while another is in progress logs "FTP: Busy" and the ROS call itself fails
  (rospy.ServiceException). So do an open of a file already open and (as FACTS.md records from a real build) a read,
  write or close of a file that is not open.
- Every operation sends its requests one at a time and never resends: sequential ReadFile of at most 239 bytes per
  round trip (a read goes on while a reply carries exactly 239 bytes, and ends with success on a shorter reply or
  NAK EOF); sequential WriteFile of at most 239 bytes, each advancing by the byte count the ACK carries (PX4 puts
  it in the ACK's data; an ACK without it advances nothing, and the chunk is sent again until the call times out,
  as a release build of MAVROS does). Timeouts per call: open/close/remove/rename/mkdir/rmdir 200 ms,
  list/checksum 5 s, truncate 25 s, read and write 200 ms x (size/239 + 1). A timeout answers success=False,
  r_errno=110 (ETIMEDOUT). Paths are cut to 238 bytes. Open modes: MODE_READ OpenFileRO, MODE_WRITE OpenFileWO, MODE_CREATE CreateFile, others
  success=False, r_errno EINVAL. A rename whose two paths take 239 bytes or more answers ENAMETOOLONG unsent.
- NAK codes become r_errno as MAVROS 1.x maps them (FailErrno: the server's errno; Fail EFAULT; InvalidDataSize
  EMSGSIZE; InvalidSession EBADFD; NoSessionsAvailable EMFILE; UnknownCommand ENOSYS); codes it does not know
  (FileNotFound, FileExists, FileProtected) leave r_errno as it was: 0 after a success, the previous failure's errno
  after a failure (MAVROS keeps r_errno in one member and sets it only then).
- reset sends ResetSessions without waiting and forgets every open file; until its ACK comes back, every call is
  refused as busy (MAVROS's op_state stays ACK: if that ACK is lost, MAVROS stays busy). An ACK that arrives while
  MAVROS is idle and carries the sequence number it expects (the late reply to a request that timed out) is
  answered with ResetSessions, which ends every session on the vehicle.
- Two modes. `fixed`: each ReadFile carries the size it wants (mavros PR 2179). `legacy`: MAVROS <= 1.21.0, whose
  ReadFile carries size 0; a server that honours the size (MAVSDK's does, as PX4 since v1.13) answers with 0 bytes,
  so every read succeeds with no data.
- The race seen with a real MAVROS 1.21.0 build (a reply that arrives before the service starts waiting): the
  parameter ~lost_open_replies (int) makes that many next opens do the open on the server, record the file as open,
  and still answer success=False, r_errno=110.
- /mavros/state (mavros_msgs/State): connected and armed from the vehicle's HEARTBEAT, as MAVROS publishes them. The
  test arms the MAVSDK autopilot itself (MavsdkAutopilot.set_armed).
- Killed (kill -9) and started again, as roslaunch restarts mavros_node: the services vanish and come back from a
  new process that knows no open file, while the vehicle keeps any session the old one held.
- For tests, not MAVROS: the parameter ~read_log (a file path) makes every /ftp/read call append a line
  "<file_path> <offset> <size>" to that file, and every /ftp/write call a line "write <file_path> <offset> <size>",
  so a test can see where transfers start (resume after a crash).
- Sequence numbers from 0, one more for each request, as MAVROS's last_send_seqnr(0) and the reply it takes: a
  restarted mavros_node counts from 0 again.
The plugin's part that does not depend on ROS (requests, replies, r_errno, the services' answers) is in
mavros_ftp_plugin.py, shared with fake_mavros2.py (the stand-in for MAVROS 2).
Not reproduced: MAVROS's reuse of the last reply's sequence number after a timeout (PX4 then resends its previous
reply) and its "Lost sync" failure (EILSEQ) on a reply with another sequence number: the stand-in numbers each
request anew and ignores replies to earlier requests during an operation.
"""
import os
import sys
import time

import rospy
from std_srvs.srv import Empty, EmptyResponse

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]

from mavros_ftp_plugin import MavrosFtpPlugin  # noqa: E402

from mavros_msgs import srv  # noqa: E402
from mavros_msgs.msg import FileEntry, State  # noqa: E402

# service name -> (type, response class): std_srvs/Empty for reset, mavros_msgs/File<Name> for the others
TYPES = {name: (getattr(srv, f"File{kind}"), getattr(srv, f"File{kind}Response")) for name, kind in
         [("list", "List"), ("open", "Open"), ("close", "Close"), ("read", "Read"), ("write", "Write"),
          ("mkdir", "MakeDir"), ("rmdir", "RemoveDir"), ("remove", "Remove"), ("truncate", "Truncate"),
          ("rename", "Rename"), ("checksum", "Checksum")]}
TYPES["reset"] = (Empty, EmptyResponse)


class FakeMavros(MavrosFtpPlugin):
    """MAVROS 1's FTP plugin: a refused call fails the ROS call itself (see the top of the file)."""

    def refuse(self, text):
        rospy.logerr(text)
        raise rospy.ServiceException(text)

    def log_warning(self, text):
        rospy.logwarn(text)

    def log_error(self, text):
        rospy.logerr(text)

    def entry(self, name, kind, size):
        return FileEntry(name=name, type=kind, size=size)

    def take_lost_open_reply(self):
        lost = rospy.get_param("~lost_open_replies", 0)
        if lost > 0:
            rospy.set_param("~lost_open_replies", lost - 1)
        return lost > 0

    # ----- ROS -----

    def serve(self):
        self.read_log = rospy.get_param("~read_log", "")
        for name in self.SERVICES:
            kind, response = TYPES[name]
            rospy.Service(f"~ftp/{name}", kind,
                          lambda req, name=name, response=response: response(**self.answer(name, req)))
        state = rospy.Publisher("~state", State, queue_size=1, latch=True)
        while not rospy.is_shutdown():
            connected, armed, system_status = self.idle_step()
            message = State(connected=connected, armed=armed, system_status=system_status)
            message.header.stamp = rospy.Time.now()
            state.publish(message)
            time.sleep(0.2)


def main():
    argv = rospy.myargv(sys.argv)
    if len(argv) != 3 or argv[2] not in ("fixed", "legacy"):
        sys.exit("usage: fake_mavros.py URL fixed|legacy")
    rospy.init_node("mavros")
    FakeMavros(argv[1], legacy=argv[2] == "legacy").serve()


if __name__ == "__main__":
    main()
