"""Build WebSocket URLs for the test peers and reject any host off this machine."""

import ipaddress
import urllib.parse


class UrlError(ValueError):
    """A URL that the test peers must not or cannot connect to."""


def is_loopback(host: str) -> bool:
    """Return True for localhost and for addresses in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def websocket_url(url: str, default_path: str) -> str:
    """Convert `url` to a ws:// URL on a loopback host.

    http:// becomes ws:// and https:// becomes wss://, and an empty path becomes
    `default_path`, so both `http://127.0.0.1:8080` and
    `ws://127.0.0.1:8080/ws/echo` are accepted. Raises UrlError for other schemes
    and for hosts that are not loopback.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "ws": "ws", "https": "wss", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise UrlError(f"invalid URL {url!r}: expected an http://, https://, ws:// or wss:// URL")
    host = parts.hostname
    if host is None:
        raise UrlError(f"invalid URL {url!r}: missing host")
    if not is_loopback(host):
        raise UrlError(
            f"invalid host {host!r} in {url!r}: the test peers only connect to "
            "127.0.0.0/8, ::1 or localhost"
        )
    path = parts.path if parts.path not in ("", "/") else default_path
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, parts.query, ""))
