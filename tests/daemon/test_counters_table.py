"""The counters tables (core/counters.py, and the daemon's: service, relay, in-path) match the
objects they read and every consumer of them."""

from __future__ import annotations

from l2tpreorder.core import counters
from l2tpreorder.core.counters import Source
from l2tpreorder.core.engine import EngineCounters, Session
from l2tpreorder.daemon.counters import SERVICE_ROWS, ServiceCounters
from l2tpreorder.daemon.inpath.counters import ADAPTER_ROWS, WORKER_ROWS
from l2tpreorder.daemon.inpath.verdicts import InPathCounters
from l2tpreorder.daemon.relay.counters import RELAY_ROWS, RelayCounters
from tests.engine_helpers import slot_names


class Worker:
    """What the in-path worker rows read (`InPathMode.held`, `.kernel_maxlen`,
    `.verdict_errors`)."""

    held = 0
    kernel_maxlen = 0
    verdict_errors = 0


# Each table: rows, the object they read, how many labels the table itself gives (`queue`).
TABLES: list[tuple[tuple[counters.Counter, ...], object, int]] = [
    (counters.of(Source.ENGINE), EngineCounters(), 1),  # direction
    (counters.of(Source.SESSION), Session("peer", 1, 2, 0, 0.0), 4),
    (SERVICE_ROWS, ServiceCounters(), 0),
    (RELAY_ROWS, RelayCounters(), 0),
    (ADAPTER_ROWS, InPathCounters(), 0),
    (WORKER_ROWS, Worker(), 0),
]
ALL_ROWS = [row for rows, _, _ in TABLES for row in rows]


def test_the_core_table_has_engine_and_session_rows_only() -> None:
    assert {row.source for row in counters.COUNTERS} == {Source.ENGINE, Source.SESSION}


def test_every_row_reads_an_attribute_that_exists() -> None:
    for rows, obj, _ in TABLES:
        for row in rows:
            value = getattr(obj, row.attribute)
            assert isinstance(value, int | float | dict), row


def test_each_sample_fills_its_family_labels_exactly() -> None:
    for rows, obj, given_by_table in TABLES:
        for row in rows:
            if row.family is None:
                continue
            value = getattr(obj, row.attribute)
            given = len(row.labels) + (1 if isinstance(value, dict) else 0) + given_by_table
            if row.family.labels[:1] == ("queue",):
                given += 1  # the worker's queue (`CounterTable` labels)
            assert given == len(row.family.labels), row


def test_one_family_one_declaration() -> None:
    families = {}
    for row in ALL_ROWS:
        if row.family is not None:
            assert families.setdefault(row.family.name, row.family) is row.family, row


def test_every_engine_counter_is_exported_or_totalled() -> None:
    """A counter added to EngineCounters without a table row would reach no operator."""
    read = {row.attribute for row in counters.of(Source.ENGINE)}
    # Histograms (hand-written families); evictions split by `confirmed`; sessions_confirmed is
    # not exported today (this table made that visible; adding it is a behaviour change).
    reported_elsewhere = {"hold_time", "displacement", "sessions_evicted", "sessions_confirmed"}
    assert set(slot_names(EngineCounters)) - reported_elsewhere <= read


def test_drop_report_and_totals_are_generated_from_the_rows() -> None:
    c = EngineCounters()
    c.dropped_late = 3
    c.skipped["timeout"] = 2
    snap = counters.drop_report(c, Source.ENGINE, "lac_to_lns:")
    assert snap["lac_to_lns:late"] == 3
    assert snap["lac_to_lns:gave_up_ns:timeout"] == 2
    assert snap["lac_to_lns:malformed:too_short"] == 0
    totals = counters.engine_totals(c)
    assert totals["dropped_late"] == 3 and totals["skipped"] == {"timeout": 2}
    assert totals["malformed"] == {}  # zero reasons left out
    relay = RelayCounters()
    relay.dropped_not_allowed = 5
    assert counters.drop_report(relay, RELAY_ROWS)["not_allowed"] == 5
