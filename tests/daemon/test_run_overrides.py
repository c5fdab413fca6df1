"""`run`'s override flags as argv again (the in-path supervisor hands them to every worker):
every flag that overrides the file survives the round trip, so none is silently dropped."""

from __future__ import annotations

import argparse

from l2tpreorder.daemon.service import add_arguments, override_argv

NOT_OVERRIDES = {"help", "config", "inpath_worker"}  # the file itself; the worker's own flag


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_every_override_flag_survives_the_round_trip() -> None:
    argv = [
        "--config", "/etc/x.yaml", "--listen", "192.0.2.1:1701", "--listen", "[2001:db8::1]:1701",
        "--lns", "127.0.0.1:1702", "--timeout", "12.5", "--log-level", "debug",
        "--socket-buffer", "4194304", "--udp-gso", "--inpath-worker", "3",
    ]  # fmt: skip
    args = parser().parse_args(argv)
    again = parser().parse_args(override_argv(args))
    overrides = {a.dest for a in parser()._actions} - NOT_OVERRIDES
    for dest in overrides:
        assert getattr(args, dest) is not None, f"{dest}: give it a value in argv above"
        assert getattr(again, dest) == getattr(args, dest), dest
    assert again.config is None and again.inpath_worker is None


def test_no_flags_no_overrides() -> None:
    assert override_argv(parser().parse_args([])) == []
