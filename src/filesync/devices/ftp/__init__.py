"""The FTP device: a server as a source (source.py) or a target (target.py), sharing connection.py."""
