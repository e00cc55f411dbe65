"""Which webhook URLs are acceptable: https to public addresses unless the operator allows more."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from moncreneau.domain.errors import Invalid

MAX_URL_LENGTH = 2048
_HEX = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    (
        f"(?:{_HEX}:){{7}}{_HEX}",
        f"(?:{_HEX}:){{1,7}}:",
        *(f"(?:{_HEX}:){{1,{7 - n}}}(?::{_HEX}){{1,{n}}}" for n in range(1, 7)),
        f":(?:(?::{_HEX}){{1,7}}|:)",
    )
)
_PORT = "(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# The shape of every URL a subscription may have: a host name, IPv4 or [IPv6] address, an
# optional port, then printable ASCII without a #fragment. What else is refused (plain http
# and private addresses in production) depends on the operator's settings, not the shape.
URL_PATTERN = rf"^https?://(?:[A-Za-z0-9._-]+|\[(?:{_IPV6})\])(?::{_PORT})?(?:[/?][!\"$-~]*)?$"


def _refuse(reason: str) -> Invalid:
    return Invalid.field("url", reason)


NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedAddress(ValueError):
    """A host that resolves to an address deliveries must never reach."""


def is_public(address: str) -> bool:
    """Publicly routable, also for the IPv4 inside IPv4-mapped, NAT64, 6to4 and Teredo forms."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast


def _allowed(address: str, networks: tuple[str, ...]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return any(ip in ipaddress.ip_network(n) for n in networks)


def public_address(host: str, port: int, allowed: tuple[str, ...] = ()) -> str:
    """Resolve `host` once; the first address if every one is public (or in `allowed`)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not is_public(address) and not _allowed(address, allowed):
            raise RefusedAddress(f"{host} resolves to {address}, which is not a public address")
    if not addresses:
        raise socket.gaierror(f"{host} has no address")
    return addresses[0]


def check_url(url: str, *, allow_private: bool, allowed: tuple[str, ...] = ()) -> str:
    """The URL if deliveries may be sent to it, else an `Invalid` error with the reason."""
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"A URL may be at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _refuse(f"Not a valid URL: {error}.") from None
    if parts.scheme not in ("http", "https"):
        raise _refuse("The URL must start with https://.")
    if not parts.hostname:
        raise _refuse("The URL has no host.")
    if parts.username or parts.password:
        raise _refuse("The URL must not carry credentials.")
    if parts.fragment:
        raise _refuse("The URL must not have a #fragment.")
    if allow_private:
        return url
    if parts.scheme != "https":
        raise _refuse("The URL must use https.")
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        raise _refuse(f"{host} is not a public address.")
    try:
        public_address(host, port or 443, allowed)
    except (socket.gaierror, UnicodeError):
        raise _refuse(f"The host {host} does not resolve.") from None
    except RefusedAddress as error:
        raise _refuse(f"{error}.") from None
    return url
