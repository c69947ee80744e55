"""Interop peer: a tempo charge server built with the official Python SDK (pympp), serving one
paid route on loopback with the standard library's HTTP server.

Run by the peer venv's python. One JSON line on stdin (the secret never on argv):
{"port", "recipient", "chain_id", "rpc_url", "currency", "secret", "amount" (token units)};
prints {"ready": true} once it listens, then serves until its stdin closes or it is terminated.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mpp.methods.tempo import server as tempo
from mpp.server import Mpp, Request, Response
from mpp.server.http import PaymentRequired

CFG = json.loads(sys.stdin.readline())
SERVER = Mpp(
    methods=tempo.charge(
        recipient=CFG["recipient"], chain_id=CFG["chain_id"], rpc_url=CFG["rpc_url"],
        currencies=[CFG["currency"]],
    ),
    realm="pympp.peer", secret_key=CFG["secret"],
)  # fmt: skip
LOOP = asyncio.new_event_loop()
threading.Thread(target=LOOP.run_forever, daemon=True).start()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = f"http://127.0.0.1:{CFG['port']}{self.path}"
        request = Request("GET", url, headers=dict(self.headers.items()), body=None)
        route = SERVER.charge(amount=CFG["amount"])
        try:
            result = asyncio.run_coroutine_threadsafe(route(request), LOOP).result(60)
        except Exception as exc:  # the SDK's own failure: say so instead of hanging up
            self._send(Response.json({"error": f"{type(exc).__name__}: {exc}"}, status=500))
            return
        if isinstance(result, PaymentRequired):
            self._send(result.challenge)
        else:
            self._send(result.with_receipt(Response.json({"paid": True})))

    def _send(self, response: Response) -> None:
        body = response.body or b""
        self.send_response(response.status)
        for name, value in response.headers.multi_items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    httpd = ThreadingHTTPServer(("127.0.0.1", CFG["port"]), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.read()  # until the test closes our stdin (or terminates us)
    httpd.shutdown()
