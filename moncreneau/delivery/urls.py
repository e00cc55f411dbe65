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


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# IPv4 ranges that are not publicly reachable (IANA special-purpose registry), stated here
# rather than left to `ipaddress.is_global`, whose answer differs between Python releases.
NON_PUBLIC_IPV4 = _networks(
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # shared address space (CGNAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, cloud metadata services
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation
    "192.31.196.0/24",  # AS112
    "192.52.193.0/24",  # AMT
    "192.88.99.0/24",  # deprecated 6to4 relay anycast
    "192.168.0.0/16",  # private
    "192.175.48.0/24",  # AS112 direct delegation
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",  # documentation
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the limited broadcast address
)
# IPv6 is an allow-list: global unicast only, so that ranges assigned later, and forms that
# carry an IPv4 address a translator would reach (IPv4-compatible ::/96, SIIT ::ffff:0:0:0/96,
# local-use NAT64 64:ff9b:1::/48, site-local fec0::/10), are refused without being listed.
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
NON_PUBLIC_IPV6 = _networks(
    "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID, anycast services
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation
)
# Forms whose embedded IPv4 address is the one really reached, judged as that address.
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


class RefusedAddress(ValueError):
    """A host that resolves to an address deliveries must never reach."""


def _public_ipv4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not any(ip in network for network in NON_PUBLIC_IPV4)


def is_public(address: str) -> bool:
    """Publicly routable: a public IPv4 address, or an IPv6 global unicast one.

    The IPv4 inside IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 forms is judged as IPv4.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _public_ipv4(ip)
    if ip in IPV4_MAPPED or ip in NAT64:
        return _public_ipv4(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip in SIX_TO_FOUR:
        return _public_ipv4(ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF))
    return ip in GLOBAL_UNICAST and not any(ip in network for network in NON_PUBLIC_IPV6)


def _allowed(address: str, networks: tuple[str, ...]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return any(ip in ipaddress.ip_network(n) for n in networks)


def public_address(host: str, port: int, allowed: tuple[str, ...] = ()) -> str:
    """Resolve `host` once; the first address if every one is public (or in `allowed`)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not is_public(address) and not _allowed(address, allowed):
            # Neither the address nor its kind: the answer would map the operator's network.
            raise RefusedAddress(f"{host} is not a public address")
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
