"""Which webhook URLs are acceptable: https to public addresses unless the operator allows more."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from moncreneau.domain.errors import Invalid

MAX_URL_LENGTH = 2048


def _refuse(reason: str) -> Invalid:
    return Invalid.field("url", reason)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool) -> str:
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
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _refuse(f"The host {host} does not resolve.") from None
    for info in infos:
        address = str(info[4][0])
        if not _is_public(address):
            raise _refuse(f"{host} resolves to {address}, which is not a public address.")
    return url
