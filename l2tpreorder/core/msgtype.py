"""Control message types (the Message Type AVP value, RFC 2661 §6), without construct.

The core needs these names to know which messages start and end sessions; `wire` builds its
construct enum from this one, so the two cannot disagree, and the core need not import construct.
"""

from __future__ import annotations

from enum import IntEnum


class MessageType(IntEnum):
    """Control message types (Message Type AVP value, §6)."""

    SCCRQ = 1
    SCCRP = 2
    SCCCN = 3
    StopCCN = 4
    HELLO = 6
    OCRQ = 7
    OCRP = 8
    OCCN = 9
    ICRQ = 10
    ICRP = 11
    ICCN = 12
    CDN = 14
    WEN = 15
    SLI = 16
