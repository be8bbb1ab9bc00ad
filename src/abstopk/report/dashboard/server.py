"""Serve a built dashboard on this machine only (stdlib ``http.server``).

The server binds to **127.0.0.1** (never another interface; there is no option for one) and
answers only requests whose ``Host`` header names 127.0.0.1 or localhost (a page elsewhere
that rebinds its DNS name to 127.0.0.1 gets 403). Files are served read-only from the site
folder (``SimpleHTTPRequestHandler`` keeps paths inside it); directory listings are off.
"""

from __future__ import annotations

import functools
import http.server
from collections.abc import Callable
from pathlib import Path

from ...errors import UserError

__all__ = ["HOST", "make_server", "serve_site"]

HOST = "127.0.0.1"
_ALLOWED_HOSTS = {"127.0.0.1", "localhost"}


class _Handler(http.server.SimpleHTTPRequestHandler):
    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if ":" in host else host
        return name in _ALLOWED_HOSTS

    def list_directory(self, path):  # noqa: D401 - no listings
        self.send_error(404, "No directory listings")
        return None

    def do_GET(self) -> None:
        if not self._host_ok():
            self.send_error(403, "Only 127.0.0.1 / localhost")
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        if not self._host_ok():
            self.send_error(403, "Only 127.0.0.1 / localhost")
            return
        super().do_HEAD()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log = getattr(self.server, "log", None)
        if log is not None:
            log(f"{self.address_string()} {format % args}")


def make_server(site: str | Path, port: int = 8000, *,
                log: Callable[[str], None] | None = None) -> http.server.ThreadingHTTPServer:
    """A server for the folder ``site`` on 127.0.0.1:``port`` (0 = any free port; read
    ``server.server_address``). Raises :class:`~abstopk.errors.UserError` when ``site`` has
    no ``index.html`` or the port cannot be bound."""
    root = Path(site)
    if not (root / "index.html").is_file():
        raise UserError(f"{root} is not a built dashboard (no index.html)")
    if not 0 <= int(port) <= 65535:
        raise UserError(f"port {port} is not between 0 and 65535")
    handler = functools.partial(_Handler, directory=str(root.resolve()))
    try:
        server = http.server.ThreadingHTTPServer((HOST, int(port)), handler)
    except OSError as e:
        raise UserError(f"cannot listen on {HOST}:{port} ({e.strerror or e})") from None
    server.daemon_threads = True
    server.log = log  # type: ignore[attr-defined]
    return server


def serve_site(site: str | Path, port: int = 8000, *,
               on_ready: Callable[[str], None] | None = None,
               log: Callable[[str], None] | None = None) -> None:
    """Serve ``site`` on http://127.0.0.1:``port``/ until Ctrl-C (KeyboardInterrupt), then
    close the socket and return. ``on_ready(url)`` is called once the socket listens."""
    server = make_server(site, port, log=log)
    url = f"http://{HOST}:{server.server_address[1]}/"
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
