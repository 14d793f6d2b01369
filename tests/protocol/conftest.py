"""Print the mutation table and the fuzzers' figures after a run of tests/protocol."""

from __future__ import annotations

from protocol_helpers import REPORT


def pytest_terminal_summary(terminalreporter):
    if REPORT["mutations"]:
        terminalreporter.section("vector mutation table (rule changed -> first vector that fails)")
        for rule, file, tc_id, key, comment in REPORT["mutations"]:
            terminalreporter.write_line(f"{rule:<55} {file} tcId {tc_id:<4} ({key}) {comment}")
    if REPORT["fuzz"]:
        terminalreporter.section("fuzzers (envelopes tried; every failure a ProtocolError)")
        for stats in REPORT["fuzz"].values():
            shown = ", ".join(f"{code} {n}" for code, n in stats.outcomes.most_common())
            terminalreporter.write_line(
                f"{stats.name}: {stats.tried} tried, {stats.rejected} rejected with ProtocolError, nothing else raised [{shown}]"
            )
