"""The reference LNS models reproduce the numbers measured from the real code paths."""

from __future__ import annotations

from l2tpreorder.tools.lns_models import (
    ALREADY_SEEN,
    EXPIRED,
    OUT_OF_SEQUENCE,
    OUTSIDE_WINDOW,
    TOO_FAR_AHEAD,
    KernelSession,
    ModelRunner,
    Xl2tpdSession,
)
from tests.engine_helpers import swap_neighbours

INTERVAL = 0.001  # one packet per millisecond


def feed(model: KernelSession[int] | Xl2tpdSession[int], orders: list[int], start_ns: int = 0):
    """Send packets whose sender positions are `orders` (Ns = start_ns + order mod 2^16)."""
    runner = ModelRunner(model)
    delivered: list[int] = []
    now = 0.0
    for order in orders:
        now += INTERVAL
        delivered += runner.receive((start_ns + order) % 65536, order, now).delivered
    runner.close(now)
    return delivered, runner.stats


def test_kernel_n0_in_order_stream_delivers_everything() -> None:
    delivered, stats = feed(KernelSession(0.0), list(range(300)))
    assert delivered == list(range(300))
    assert stats.dropped == 0 and stats.out_of_order == 0


def test_kernel_n0_loses_five_packets_for_one_adjacent_swap() -> None:
    delivered, stats = feed(KernelSession(0.0), swap_neighbours(range(100), [50]))
    assert stats.dropped == 5
    assert stats.drop_reasons == {OUT_OF_SEQUENCE: 5}
    # 51 arrives early and is dropped, 50 is delivered, then 52..55 are dropped until the run
    # of out-of-sequence packets is long enough for 56 to re-base nr.
    assert delivered == [*range(51), *range(56, 100)]
    assert stats.stalled_max > 0


def test_kernel_n0_two_swaps_far_apart_cost_five_each() -> None:
    orders = swap_neighbours(range(200), [50])
    orders[150], orders[151] = orders[151], orders[150]
    _, stats = feed(KernelSession(0.0), orders)
    assert stats.dropped == 10


def test_kernel_n0_run_counter_not_reset_by_in_sequence_packets() -> None:
    # 10 arrives early (oos, run starts at 10), 9 is in sequence and delivered, then 11..14
    # continue the run from 10 although an in-sequence packet came in between.
    model: KernelSession[int] = KernelSession(0.0)
    seq = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 9, 11, 12, 13, 14, 15]
    delivered, stats = feed(model, seq)
    assert delivered == [*range(10), 15]
    assert stats.dropped == 5


def test_kernel_first_ns_outside_the_initial_window_is_dropped() -> None:
    # nr starts at 0; a LAC whose Ns is at 40000 when the session is set up loses packets
    # until its Ns wraps into the window, reorder_skip notwithstanding.
    model: KernelSession[int] = KernelSession(0.0)
    runner = ModelRunner(model)
    assert runner.receive(40000, 0, 0.001).dropped == [(0, OUTSIDE_WINDOW)]
    step = runner.receive(5, 1, 0.002)  # inside the window: re-based by reorder_skip
    assert step.delivered == [1] and model.nr == 6


def test_kernel_reorder_timeout_repairs_a_swap_without_loss() -> None:
    delivered, stats = feed(KernelSession(0.1), swap_neighbours(range(100), [50]))
    assert delivered == list(range(100))
    assert stats.dropped == 0


def test_kernel_numeric_insert_misorders_across_the_wrap() -> None:
    # The same adjacent swap, but at 65535 -> 0: 0 is queued ahead of 65535 (no modulo), the
    # head never matches nr, and the session stalls until the head expires. (The stream starts
    # at Ns 0: the kernel's initial window would drop a stream that starts near the wrap.)
    model: KernelSession[int] = KernelSession(0.1)
    runner = ModelRunner(model)
    now = 0.0
    # order 65535 is Ns 65535, order 65536 is Ns 0
    orders = swap_neighbours(range(65536 + 200), [65535])
    held_seen: list[list[int | None]] = []
    delivered: list[int] = []
    for order in orders:
        now += 0.001
        delivered += runner.receive(order % 65536, order, now).delivered
        if order == 65535:  # 0 already held, 65535 just arrived and went behind it
            held_seen.append(model.held)
    runner.close(now)
    assert held_seen == [[0, 65535]]
    stats = runner.stats
    assert stats.drop_reasons.get(EXPIRED, 0) >= 1
    assert delivered != orders and delivered != sorted(orders)
    assert stats.stalled_max >= 0.1
    # Away from the wrap the same swap is repaired without loss (see the test above), so the
    # numeric insert at the wrap is the cause.


def test_kernel_reorder_timeout_expiry_is_checked_only_on_arrival() -> None:
    model: KernelSession[int] = KernelSession(0.05)
    runner = ModelRunner(model)
    runner.receive(0, 0, 0.0)
    assert runner.receive(2, 2, 0.001).delivered == []  # waits for 1
    assert model.held == [2]
    # 10 seconds later: expiry is only checked now, when the next packet arrives.
    step = runner.receive(3, 3, 10.0)
    assert (2, EXPIRED) in step.dropped
    assert step.delivered == [3]  # expired 2 set reorder_skip, 3 re-bases nr


def test_kernel_held_duplicate_blocks_the_head_until_it_expires() -> None:
    model: KernelSession[int] = KernelSession(0.05)
    runner = ModelRunner(model)
    t = 0.0
    for ns in (0, 1, 3, 3):  # 3 held twice while 2 is missing
        t += 0.001
        runner.receive(ns, ns, t)
    t += 0.001
    step = runner.receive(2, 2, t)
    assert step.delivered == [2, 3]
    assert model.held == [3]  # the duplicate, at the head, Ns 3 != nr 4
    t += 0.001
    assert runner.receive(4, 4, t).delivered == []  # 4 is stuck behind it
    step = runner.receive(5, 5, t + 0.1)  # the duplicate and 4 have expired by now
    assert (3, EXPIRED) in step.dropped and (4, EXPIRED) in step.dropped
    assert step.delivered == [5]


def test_xl2tpd_single_loss_is_tolerated() -> None:
    orders = [o for o in range(100) if o != 50]
    delivered, stats = feed(Xl2tpdSession(0), orders)
    assert delivered == orders
    assert stats.dropped == 0


def test_xl2tpd_stalls_after_two_consecutive_losses() -> None:
    orders = [o for o in range(300) if o not in (50, 51)]
    delivered, stats = feed(Xl2tpdSession(0), orders)
    assert delivered == list(range(50))
    assert stats.dropped == 300 - 2 - 50
    assert stats.drop_reasons == {TOO_FAR_AHEAD: 248}
    assert stats.stalled_max > 0.2


def test_xl2tpd_stall_lasts_until_ns_wraps_round() -> None:
    # rec sticks at 49: Ns behind it is "already seen", Ns further than 2 ahead is dropped,
    # until Ns comes round to 49 again one full 16-bit cycle later (Ns == rec is accepted).
    orders = [o for o in range(65536 + 60) if o not in (50, 51)]
    delivered, stats = feed(Xl2tpdSession(0), orders)
    resumed = [o for o in delivered if o >= 52]
    assert resumed and resumed[0] == 65536 + 49
    assert stats.drop_reasons[ALREADY_SEEN] > 0 and stats.drop_reasons[TOO_FAR_AHEAD] > 0


def test_xl2tpd_swap_drops_the_late_packet() -> None:
    delivered, stats = feed(Xl2tpdSession(0), swap_neighbours(range(100), [50]))
    assert stats.drop_reasons == {ALREADY_SEEN: 1}
    assert 50 not in delivered and len(delivered) == 99


def test_xl2tpd_starts_at_zero_unless_told_to_follow_the_first_packet() -> None:
    delivered, _ = feed(Xl2tpdSession(0), list(range(10)), start_ns=1000)
    assert delivered == []
    delivered, _ = feed(Xl2tpdSession(None), list(range(10)), start_ns=1000)
    assert delivered == list(range(10))


def test_unsequenced_packets_pass_both_models() -> None:
    for model in (KernelSession[int](0.0), KernelSession[int](0.1), Xl2tpdSession[int](0)):
        runner = ModelRunner(model)
        got = [d for i in range(5) for d in runner.receive(None, i, i * 0.001).delivered]
        assert got == list(range(5))
