"""Several destinations at once, sharing one connection per jump-host chain."""

from __future__ import annotations

import asyncio

from tunnelauth import ssh
from tunnelauth._compat import TaskGroup
from tunnelauth.doctor.checks import Destination, DoctorRequest, laptop_ports
from tunnelauth.doctor.model import DestinationReport, DoctorReport


async def run(request: DoctorRequest) -> DoctorReport:
    """Check every destination (at most request.concurrency at a time); closes every
    connection before returning, whatever happened."""
    laptop_busy = await asyncio.to_thread(laptop_ports, request)  # psutil names a holder: slow
    pool = ssh.SharedConnections()
    slots = asyncio.Semaphore(max(1, request.concurrency))

    async def one(name: str, hops: tuple[ssh.Hop, ...]) -> DestinationReport:
        async with slots:
            return await Destination(request, name, hops, pool, laptop_busy).run()

    try:
        async with TaskGroup() as group:
            tasks = [group.create_task(one(name, hops)) for name, hops in request.destinations]
    finally:
        await pool.close()
    return DoctorReport(tuple(task.result() for task in tasks), request.strict)
