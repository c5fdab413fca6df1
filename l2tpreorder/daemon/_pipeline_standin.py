"""TEMPORARY stand-in for arch's core/pipeline.Pipeline (deleted when that lands): tags ride
on a bytes subclass, and the engine's rewrite helpers are wrapped to keep them."""
# mypy: ignore-errors
from __future__ import annotations

from collections.abc import Hashable

from l2tpreorder.core import engine as _engine
from l2tpreorder.core.engine import EngineConfig, ReorderEngine


class _Tagged(bytes):
    tag: object = None


def _keep(fn):
    def wrapped(data, *args):
        new = fn(data, *args)
        if isinstance(data, _Tagged):
            t = _Tagged(new)
            t.tag = data.tag
            return t
        return new

    return wrapped


_engine.with_ns = _keep(_engine.with_ns)
_engine.without_sequence = _keep(_engine.without_sequence)


class Output:
    __slots__ = ("data", "flow", "tag", "to_lns")

    def __init__(self, to_lns, flow, data, tag=None):
        self.to_lns, self.flow, self.data, self.tag = to_lns, flow, data, tag


class Pipeline:
    def __init__(self, config: EngineConfig, *, reorder_from_lns: bool = False) -> None:
        self.engine = ReorderEngine(config)
        self._to_lac = []

    def from_lac(self, data, flow: Hashable, now: float, tag=None) -> int:
        t = _Tagged(data)
        t.tag = tag
        return self.engine.receive(t, flow, now)

    def from_lns(self, data, flow, now, tag=None) -> int:
        if data and data[0] & 0x80:
            self.engine.observe_reverse(data, flow, now)
            self._to_lac.append(Output(False, flow, data, tag))
            return 0
        self._to_lac.append(Output(False, flow, data, tag))
        return 1

    def take_output(self):
        out = [Output(True, f, bytes(d), getattr(d, "tag", None)) for f, d in self.engine.out]
        self.engine.out.clear()
        out += self._to_lac
        self._to_lac = []
        return out

    def next_deadline(self):
        return self.engine.next_deadline()

    def expire(self, now):
        self.engine.expire(now)

    def flush(self, now):
        self.engine.flush(now)

    def reconfigure(self, config, now, *, reorder_from_lns=None):
        self.engine.reconfigure(config, now)

    @property
    def engines(self):
        return {"lac_to_lns": self.engine}
