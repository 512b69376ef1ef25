"""The ROS edge: each node wires topics, services and params to the library; nothing here moves bytes itself."""
