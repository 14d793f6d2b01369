"""Ray-side helpers that need no actor: error text, and the processes of a Ray session."""

from __future__ import annotations

import os
import re
from pathlib import Path


def short_error(exc: BaseException) -> str:
    """First line of a Ray error, plus its last line (where Ray puts the root cause, e.g.
    `ModuleNotFoundError: No module named 'sim'`)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Ray colours its messages for terminals
    lines = [line.strip() for line in plain.strip().splitlines() if line.strip() and set(line.strip()) != {"^"}]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    if "No module named" in text:
        text += " (the workers cannot import the project: keep ship_code=True, or install cdrsim on every node)"
    return f"{type(exc).__name__}: {text}"


def session_processes(session_name: str) -> list[int]:
    """PIDs of the live processes of one Ray session (Linux, from /proc): those whose command
    line names the session (GCS, raylet, monitors) and all their descendants (workers, agents,
    which rename themselves `ray::...`)."""
    own = os.getpid()
    parent: dict[int, int] = {}
    roots: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # exited while we looked
        if stat[0] == "Z" or pid == own:
            continue
        parent[pid] = int(stat[1])
        if session_name.encode() in cmdline:
            roots.add(pid)
    found = set(roots)
    changed = True
    while changed:  # close over descendants
        changed = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return sorted(found)
