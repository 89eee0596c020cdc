"""Where a URL points: the one rule for "this stays on this machine"."""
from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address, IPv6 without brackets) is this machine: ``localhost``,
    127.0.0.0/8, ::1."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
