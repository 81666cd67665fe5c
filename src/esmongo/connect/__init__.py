"""Settings, the connection to MongoDB, and the embedded server started when none is set."""

from esmongo.connect.connection import Connection, Settings

__all__ = ["Connection", "Settings"]
