"""Python 3.10 lacks asyncio.TaskGroup, asyncio.timeout and exception groups; backports have them."""

from __future__ import annotations

import asyncio
import sys

if sys.version_info >= (3, 11):
    from asyncio import TaskGroup, timeout
    from builtins import BaseExceptionGroup
else:  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup
    from taskgroup import TaskGroup, timeout

# On 3.10 asyncio.TimeoutError is not the builtin TimeoutError.
TIMEOUTS: tuple[type[TimeoutError], type[asyncio.TimeoutError]] = (
    TimeoutError,
    asyncio.TimeoutError,
)

__all__ = ["TIMEOUTS", "BaseExceptionGroup", "TaskGroup", "timeout"]
