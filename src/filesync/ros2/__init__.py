"""filesync on ROS 2 (rclpy): the same nodes, topics and services as filesync.ros, on filesync_interfaces."""
