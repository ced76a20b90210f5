"""tunnelauth: log a remote CLI into an OAuth provider through one SSH connection."""

from __future__ import annotations

__version__ = "0.1.0"
