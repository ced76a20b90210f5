"""What the doctor found: checks, per-destination reports, the whole report. Pure data."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"  # not run, because an earlier check failed


@dataclass(frozen=True)
class Outcome:
    """What one check decided; `data` carries facts later checks need (a version, a user)."""

    status: Status
    detail: str
    data: Any = None


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


def blocks(status: Status, strict: bool) -> bool:
    """Does this status make the run fail? Warnings do only with --strict."""
    return status is Status.FAIL or (strict and status is Status.WARN)


@dataclass(frozen=True)
class DestinationReport:
    destination: str
    checks: tuple[Check, ...]

    def ok(self, strict: bool) -> bool:
        return not any(blocks(check.status, strict) for check in self.checks)


@dataclass(frozen=True)
class DoctorReport:
    destinations: tuple[DestinationReport, ...]
    strict: bool = False

    @property
    def ok(self) -> bool:
        return all(dest.ok(self.strict) for dest in self.destinations)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, object]:
        return {
            "destinations": [
                {
                    "destination": dest.destination,
                    "ok": dest.ok(self.strict),
                    "checks": [check.to_dict() for check in dest.checks],
                }
                for dest in self.destinations
            ],
            "ok": self.ok,
        }
