"""Simulator side of each exchange protocol: one module per venue, one
:class:`~pipeline.sim.protocols.base.SimProtocol` subclass each, named
``Protocol``.

A protocol instance serves one client connection: it answers the client's
frames (subscribe, ping) and renders the market into that exchange's wire
format, keeping per-connection state such as sequence numbers and the last
book sent (to render deltas). It does no I/O; ``pipeline.sim.server`` does.
"""
from __future__ import annotations

import importlib


def load_protocol(name: str):
    return importlib.import_module(f"pipeline.sim.protocols.{name}").Protocol
