"""Deliveries never reach a non-public address, checked when subscribing and when connecting."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from moncreneau.delivery import sender
from moncreneau.delivery.urls import RefusedAddress, check_url, is_public, public_address
from moncreneau.domain.errors import Invalid


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fd00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::",
        "2002:7f00:1::",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
    ],
)
def test_every_non_public_address_form_is_refused(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public(address)


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


def test_resolving_refuses_any_private_address_among_several(
    resolver: dict[str, list[str]],
) -> None:
    resolver["mixed.example"] = ["93.184.216.34", "192.168.0.2"]
    with pytest.raises(RefusedAddress, match=r"192\.168\.0\.2"):
        public_address("mixed.example", 443)


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
    ],
)
def test_numeric_spellings_of_a_private_address_are_refused_at_subscription(host: str) -> None:
    with pytest.raises(Invalid) as refused:
        check_url(f"https://{host}/hook", allow_private=False)
    assert "not a public address" in str(refused.value.errors)
