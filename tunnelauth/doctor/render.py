"""The report for people (a rich table) and for programs (one JSON document). Both on stdout."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from tunnelauth.doctor.model import DoctorReport, Status
from tunnelauth.text import inert, inert_tree

STYLES = {Status.PASS: "green", Status.FAIL: "bold red", Status.WARN: "yellow", Status.SKIP: "dim"}
WIDE = 200  # not a terminal (CI logs): don't wrap a detail in the middle of a word


def as_json(report: DoctorReport, out: TextIO | None = None) -> None:
    # Versions and reasons come from the remote: inert, like everything tunnelauth prints.
    print(json.dumps(inert_tree(report.to_dict()), indent=2), file=out or sys.stdout, flush=True)


def as_table(report: DoctorReport, out: TextIO | None = None) -> None:
    from rich.console import Console  # slow to import; only the doctor's table needs it
    from rich.markup import escape
    from rich.table import Table

    stream = out or sys.stdout
    console = Console(file=stream, width=None if stream.isatty() else WIDE, highlight=False)
    for dest in report.destinations:
        verdict = "[green]ok[/]" if dest.ok(report.strict) else "[bold red]FAILED[/]"
        table = Table(title=f"{escape(inert(dest.destination))}: {verdict}", title_justify="left")
        table.add_column("check", no_wrap=True)
        table.add_column("result", no_wrap=True)
        table.add_column("detail")
        table.add_column("time", justify="right", no_wrap=True)
        for check in dest.checks:
            style = STYLES[check.status]
            table.add_row(
                escape(inert(check.name)),
                f"[{style}]{check.status.value.upper()}[/]",
                escape(inert(check.detail)),
                f"{check.seconds:.2f} s" if check.status is not Status.SKIP else "",
            )
        console.print(table)
    failed = sum(not dest.ok(report.strict) for dest in report.destinations)
    total = len(report.destinations)
    summary = f"{total - failed} of {total} destination{'s' if total != 1 else ''} ok"
    strict = " (--strict: warnings fail)" if report.strict else ""
    console.print(summary + strict if not failed else f"[bold red]{summary}[/]{strict}")
