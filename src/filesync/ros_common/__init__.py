"""What the ROS 1 (filesync.ros) and ROS 2 (filesync.ros2) adapters share: the conversions between the library's
records and the messages, and the ledger's service handlers. Nothing here imports rospy or rclpy: each adapter hands in
its generation's message classes and constructors (a Generation)."""
