"""In-path mode's exception types, in a module of their own: nfqueue.py is compiled with mypyc
(l2tpreorder.build), and mypyc cannot compile a class that inherits from OSError."""

from __future__ import annotations


class NfqueueError(OSError):
    """The kernel refused a queue configuration request (errno and what was asked)."""
