"""Strict checks of the base URLs in the settings (PostHog, Kinesis and DynamoDB endpoints).

A URL that ``urlsplit`` half-accepts (a space in the host, port 99999, an unclosed
``[``) would start a worker that then retries forever as if the service were down, so
every part is checked at start-up: scheme, host, port, and what may follow.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

# RFC 1123 host name labels; IPv4 and IPv6 literals are checked by ipaddress.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_MAX_HOST_CHARS = 253
_URL_PATH = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*")
# A URL's host (a name, or an IPv6 address in brackets) and optional :port.
_NETLOC = re.compile(r"(?:\[(?P<ipv6>[^\]]*)\]|(?P<name>[^:\[\]]*))(?::(?P<port>.*))?")
_PORT = re.compile(r"[0-9]{1,5}")
_MAX_PORT = 65535


def problem(text: str, *, path_ok: bool) -> str | None:  # noqa: PLR0911 - one return per rule
    """What is wrong with ``text`` as an http(s) base URL, as an "allowed" text; None if nothing."""
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unclosed [IPv6 bracket, ...
        return f"a well-formed http:// or https:// URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "an http:// or https:// URL with a host"
    if "@" in parts.netloc or "?" in text or "#" in text or not text.isprintable():
        return "a URL without user:password@, ?query, #fragment or control characters"
    netloc = _NETLOC.fullmatch(parts.netloc)
    if netloc is None or not _valid_host(netloc["name"] or "", netloc["ipv6"]):
        return "a valid host: a DNS name (letters, digits, '-' between dots), IPv4 or [IPv6]"
    port = netloc["port"]
    if port is not None and not (_PORT.fullmatch(port) and 1 <= int(port) <= _MAX_PORT):
        return f"a port from 1 to {_MAX_PORT}"
    if path_ok:
        return None if _URL_PATH.fullmatch(parts.path) else "a path of URL characters, %-escaped"
    return None if parts.path in ("", "/") else "no path: scheme://host[:port]"


def without_userinfo(text: str) -> str:
    """``text`` with any ``user:password@`` replaced, so an error message never shows it."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text if "@" not in text else "<redacted: the URL holds '@'>"
    if "@" not in parts.netloc:
        return text
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"<redacted>@{host}"))


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8, ::1 (and ::ffff:127.0.0.1): traffic that never leaves the machine."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _valid_host(name: str, ipv6: str | None) -> bool:
    labels = name.split(".")
    try:
        if ipv6 is not None:
            ipaddress.IPv6Address(ipv6)  # raises if it is not one
            return "%" not in ipv6  # no zone ids
        if all(label.isdigit() for label in labels):  # then it must be IPv4 (not 999.1.1.1)
            ipaddress.IPv4Address(name)
            return True
    except ValueError:
        return False
    return len(name) <= _MAX_HOST_CHARS and all(_HOST_LABEL.fullmatch(label) for label in labels)
