"""Shared test fixtures: the offline data folder and a local HTTP server."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Read once at import, so tests that monkeypatch MANYTASK_DATA do not change it.
_SHARED = os.environ.get("MANYTASK_DATA")


@pytest.fixture
def shared_data() -> Path:
    """The data folder named by ``$MANYTASK_DATA`` (read-only); skip the test if absent."""
    if not _SHARED or not Path(_SHARED).is_dir():
        pytest.skip("shared data not available (set MANYTASK_DATA to the data folder)")
    return Path(_SHARED)


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (body, declared Content-Length)``; 404 otherwise."""

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path)  # type: ignore[attr-defined]
        if route is None:
            self.send_error(404, "Not Found")
            return
        body, length = route
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)  # fewer bytes than declared = a truncated download

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict]]:
    """A server on 127.0.0.1: yields ``(base_url, routes)``; fill ``routes["/x.zip"]``."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.routes  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# The smallest run of a shipped recipe that exercises every part of the loop.
TINY = [
    "train.episodes=6",
    "train.episode.ways=5",
    "train.episode.shots=1",
    "train.episode.queries=2",
    "train.episode.tasks=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.val_every=3",
    "train.val_episodes=4",
    "model.encoder_args.hidden=8",
    "data.source=embedded",
    "eval.episodes=8",
    "eval.batch_size=4",
    "eval.episode.queries=3",
    "quiet=true",
    "device=cpu",
]


@pytest.fixture
def tiny_overrides():
    return list(TINY)
