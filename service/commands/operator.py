"""Who runs an operator command, for the audit log."""

from __future__ import annotations

import getpass
import os


def who() -> str:
    """The operating-system user running this command (its uid if it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return f"uid {os.getuid()}"
