"""Deliveries never reach a non-public address, checked when subscribing and when connecting."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from moncreneau.delivery import sender
from moncreneau.delivery.urls import RefusedAddress, check_url, is_public, public_address
from moncreneau.domain.errors import Invalid

# Each address, whether a delivery may reach it, and why.
ADDRESSES = [
    ("93.184.216.34", True, "public IPv4"),
    ("8.8.8.8", True, "public IPv4"),
    ("2606:2800:220:1:248:1893:25c8:1946", True, "global unicast"),
    ("2001:4860:4860::8888", True, "global unicast outside 2001::/23"),
    ("2620:fe::fe", True, "global unicast"),
    ("::ffff:93.184.216.34", True, "IPv4-mapped public IPv4"),
    ("64:ff9b::5db8:d822", True, "NAT64 of a public IPv4"),
    ("2002:5db8:d822::1", True, "6to4 of a public IPv4"),
    ("127.0.0.1", False, "loopback"),
    ("10.1.2.3", False, "private"),
    ("172.16.0.1", False, "private"),
    ("192.168.1.1", False, "private"),
    ("169.254.169.254", False, "link-local"),
    ("100.64.0.1", False, "shared address space"),
    ("0.0.0.0", False, "this network"),
    ("0.1.2.3", False, "this network"),
    ("192.0.0.9", False, "IETF protocol assignments"),
    ("192.0.2.1", False, "documentation"),
    ("198.18.0.1", False, "benchmarking"),
    ("198.51.100.1", False, "documentation"),
    ("203.0.113.1", False, "documentation"),
    ("192.88.99.1", False, "deprecated 6to4 relay"),
    ("224.0.0.1", False, "multicast"),
    ("240.0.0.1", False, "reserved"),
    ("255.255.255.255", False, "broadcast"),
    ("::1", False, "loopback"),
    ("::", False, "unspecified"),
    ("fd00::1", False, "unique local"),
    ("fe80::1", False, "link-local"),
    ("fe80::1%eth0", False, "scoped link-local"),
    ("fec0::1", False, "site-local"),
    ("ff02::1", False, "multicast"),
    ("ff0e::1", False, "global multicast"),
    ("::7f00:1", False, "IPv4-compatible loopback"),
    ("::5db8:d822", False, "IPv4-compatible, deprecated"),
    ("::ffff:127.0.0.1", False, "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", False, "IPv4-mapped private"),
    ("::ffff:0:a9fe:a9fe", False, "SIIT"),
    ("::ffff:0:5db8:d822", False, "SIIT"),
    ("64:ff9b::a00:1", False, "NAT64 of a private IPv4"),
    ("64:ff9b::a9fe:a9fe", False, "NAT64 of link-local"),
    ("64:ff9b:1::a9fe:a9fe", False, "local-use NAT64"),
    ("64:ff9b:1::5db8:d822", False, "local-use NAT64"),
    ("100::1", False, "discard-only"),
    ("2001::1", False, "Teredo"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False, "Teredo"),
    ("2001:2::1", False, "benchmarking"),
    ("2001:20::1", False, "ORCHIDv2"),
    ("2001:db8::1", False, "documentation"),
    ("3fff::1", False, "documentation"),
    ("2002:a00:1::", False, "6to4 of a private IPv4"),
    ("2002:7f00:1::", False, "6to4 of loopback"),
    ("2002:a9fe:a9fe::1", False, "6to4 of link-local"),
    ("4000::1", False, "outside global unicast"),
    ("5f00::1", False, "SRv6 SIDs"),
]


@pytest.mark.parametrize(("address", "public", "why"), ADDRESSES)
def test_only_public_ipv4_and_ipv6_global_unicast_addresses_are_reachable(
    address: str, public: bool, why: str
) -> None:
    assert is_public(address) is public, why


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A stub resolver: the test decides what each name resolves to, and counts lookups."""
    table: dict[str, list[str]] = {}
    lookups: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    table["__lookups__"] = lookups
    return table


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every socket connection attempted; none is really opened."""
    opened: list[tuple[str, int]] = []

    async def open_connection(_loop: Any, address: str, port: int, *args: Any) -> Any:
        opened.append((address, port))
        raise ConnectionRefusedError("not opened in tests")

    monkeypatch.setattr(sender, "open_connection", open_connection)
    return opened


def post(url: str, allowed: tuple[str, ...] = ()) -> sender.Response:
    """One production-mode delivery attempt (private addresses refused)."""

    async def once() -> sender.Response:
        client = sender.Client(4, allow_private=False, allowed_networks=allowed)
        return await client.post(url, b"{}", {}, 2.0)

    return asyncio.run(once())


@pytest.mark.parametrize(
    "addresses", [["10.0.0.7"], ["93.184.216.34", "127.0.0.1"], ["169.254.169.254"]]
)
def test_a_delivery_to_a_name_resolving_to_a_private_address_opens_no_socket(
    resolver: dict[str, list[str]], connections: list[Any], addresses: list[str]
) -> None:
    resolver["rebound.example"] = addresses
    response = post("https://rebound.example/hook")
    assert response.status_code is None
    assert response.error is not None and "not a public address" in response.error
    assert connections == []


def test_a_delivery_connects_to_the_vetted_address_without_a_second_lookup(
    resolver: dict[str, list[str]], connections: list[Any]
) -> None:
    resolver["ok.example"] = ["93.184.216.34"]
    response = post("http://ok.example:8080/hook")
    assert connections == [("93.184.216.34", 8080)]
    assert resolver["__lookups__"] == ["ok.example"]
    assert response.status_code is None


def test_resolving_refuses_any_private_address_among_several_without_naming_it(
    resolver: dict[str, list[str]],
) -> None:
    resolver["mixed.example"] = ["93.184.216.34", "192.168.0.2"]
    with pytest.raises(RefusedAddress) as refused:
        public_address("mixed.example", 443)
    assert str(refused.value) == "mixed.example is not a public address"


@pytest.mark.parametrize("address", ["10.20.30.40", "169.254.169.254", "fd12:3456::7"])
def test_a_refusal_names_neither_the_address_nor_its_kind(
    resolver: dict[str, list[str]], connections: list[Any], address: str
) -> None:
    resolver["vm"] = [address]
    with pytest.raises(Invalid) as refused:
        check_url("https://vm/hook", allow_private=False)
    delivered = post("https://vm/hook")
    for message in (str(refused.value.errors["url"]), delivered.error or ""):
        assert "vm is not a public address" in message
        for leak in (address, "private", "link-local", "loopback", "resolves to"):
            assert leak not in message
    assert connections == []


def test_an_operator_allowed_network_is_reachable_and_nothing_else_is(
    resolver: dict[str, list[str]], connections: list[Any]
) -> None:
    resolver["partner.internal"] = ["10.8.1.20"]
    resolver["other.internal"] = ["10.9.0.1"]
    allowed = ("10.8.0.0/16",)
    post("https://partner.internal/hook", allowed)
    refused = post("https://other.internal/hook", allowed)
    assert connections == [("10.8.1.20", 443)]
    assert refused.error is not None and "not a public address" in refused.error


def test_allowed_networks_come_from_the_environment() -> None:
    from moncreneau.config import ConfigError, Settings

    settings = Settings.from_env({"MONCRENEAU_ALLOWED_NETWORKS": "10.8.0.0/16, fd12::/64"})
    assert settings.allowed_networks == ("10.8.0.0/16", "fd12::/64")
    with pytest.raises(ConfigError, match="MONCRENEAU_ALLOWED_NETWORKS"):
        Settings.from_env({"MONCRENEAU_ALLOWED_NETWORKS": "intranet"})


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "017700000001",
        "[::ffff:7f00:1]",
        "[::7f00:1]",
        "[::ffff:0:a9fe:a9fe]",
        "[64:ff9b:1::a9fe:a9fe]",
        "[fec0::1]",
    ],
)
def test_numeric_spellings_of_a_private_address_are_refused_at_subscription(host: str) -> None:
    with pytest.raises(Invalid) as refused:
        check_url(f"https://{host}/hook", allow_private=False)
    assert "not a public address" in str(refused.value.errors)
