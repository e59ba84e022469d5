"""Serve candidates to people on this machine and wait for their rankings (``rlhfkit demo --human``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def collect_rankings(
    db_path: str | Path,
    candidates_path: str | Path,
    say: Callable[[str], None] = print,
    host: str = "127.0.0.1",
    port: int | None = None,
    poll_seconds: float = 2.0,
    timeout_seconds: float | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> list[Any]:
    """Import the candidates, create an annotator, serve the app and block until every item has a
    ranking (or Ctrl-C / ``timeout_seconds``: what was ranked so far is kept). Returns ``Ranking``s.

    ``on_ready(login_url)`` is called once the server listens (tests use it to act as the person).
    """
    import uvicorn

    from rlhfkit.collect.annotate.app import create_app
    from rlhfkit.collect.annotate.export import export_records
    from rlhfkit.collect.annotate.store import Store, read_candidates
    from rlhfkit.data import ranking_from_native

    items = read_candidates(candidates_path)  # before the database exists: a bad file creates none
    store = Store(db_path)
    store.init()
    store.add_items(items)
    name = f"you-{int(time.time())}"
    token = store.add_annotator(name)
    port = port or free_port(host)
    app = create_app(db_path, overlap=1)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the annotation server could not start on {host}:{port}")
        time.sleep(0.05)
    url = f"http://{host}:{port}/login#token={token}"
    total = store.counts()["items"]
    say(
        f"      open {url} and rank the {total} items (Ctrl-C to stop early and use what is ranked)"
    )
    if on_ready is not None:
        on_ready(url)
    start = time.monotonic()
    try:
        while True:
            done = len(store.rankings_by_item(1))
            if done >= total:
                break
            if timeout_seconds is not None and time.monotonic() - start > timeout_seconds:
                say(
                    f"      stopped waiting after {timeout_seconds:.0f} s: {done}/{total} items ranked"
                )
                break
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        say("      stopped waiting: using the items ranked so far")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.store.checkpoint()
    return [ranking_from_native(rec) for rec in export_records(store)]
