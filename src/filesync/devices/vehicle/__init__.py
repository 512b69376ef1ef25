"""Vehicle devices: an autopilot's files over MAVLink FTP, directly (mavlink.py on mavftp.py, the protocol client) or
through MAVROS's FTP services (mavros.py)."""
