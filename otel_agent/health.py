"""A small HTTP endpoint for the kubelet's probes.

/healthz (liveness): the collection loop has ticked recently. A wedged loop is the one failure
a restart fixes. /readyz (readiness): at least one cycle has completed. Export failures do not
make the agent unready: the next export carries the totals, and restarting would not help.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class HealthServer:
    def __init__(self, listen: str, *, heartbeat: Callable[[], float], cycles: Callable[[], int],
                 stale_after_seconds: float) -> None:
        host, _, port = listen.rpartition(":")
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                age = time.monotonic() - heartbeat()
                if self.path.startswith("/healthz"):
                    ok = age <= stale_after_seconds
                elif self.path.startswith("/readyz"):
                    ok = cycles() > 0
                else:
                    self.send_error(404)
                    return
                body = json.dumps({"ok": ok, "cycles": cycles(),
                                   "seconds_since_cycle": round(age, 3)}).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # probes every few seconds: keep logs quiet
                pass

        self._server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health",
                                        daemon=True)
        owner._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
