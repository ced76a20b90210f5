"""Several destinations at once, sharing one connection per jump-host chain."""

from __future__ import annotations

import asyncio

from tunnelauth import ssh
from tunnelauth._compat import TaskGroup
from tunnelauth.doctor.checks import Destination, DoctorRequest, laptop_ports, unexpected
from tunnelauth.doctor.model import Check, DestinationReport, DoctorReport, Status


async def run(request: DoctorRequest) -> DoctorReport:
    """Check every destination (at most request.concurrency at a time); closes every
    connection before returning, whatever happened."""
    laptop_busy = await asyncio.to_thread(laptop_ports, request)  # psutil names a holder: slow
    pool = ssh.SharedConnections()
    slots = asyncio.Semaphore(max(1, request.concurrency))

    async def one(name: str, hops: tuple[ssh.Hop, ...]) -> DestinationReport:
        async with slots:
            destination = Destination(request, name, hops, pool, laptop_busy)
            try:
                return await destination.run()
            # One destination's surprise must not cost the others their reports.
            except Exception as exc:  # noqa: BLE001
                failed = Check("doctor", Status.FAIL, " ".join(unexpected(exc).split()), 0.0)
                return DestinationReport(name, (*destination.checks, failed))

    try:
        async with TaskGroup() as group:
            tasks = [group.create_task(one(name, hops)) for name, hops in request.destinations]
    finally:
        await pool.close()
    return DoctorReport(tuple(task.result() for task in tasks), request.strict)
