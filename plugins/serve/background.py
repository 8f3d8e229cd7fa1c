"""The application served from a thread of this process on a loopback port: for tests, benchmarks and notebooks.

with serving(app) as url:      # http://127.0.0.1:PORT
    ...
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

from .command import listen


@contextlib.contextmanager
def serving(app: Any, *, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 60.0) -> Iterator[str]:
    """Serve `app` with uvicorn until the block ends; yields its URL once it accepts connections."""
    import uvicorn

    listener = listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="mmgen-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)
        listener.close()
