"""Stands in for llama-cpp-python's server (`python -m crashing_llama_server --host H --port P ...`): it answers
GET /v1/models, so it starts, then dies by SIGSEGV under the first chat completion, as a llama.cpp build that does
not run on the CPU does. Each start appends a line to the file named by $CRASHING_SERVER_STARTS."""

from __future__ import annotations

import argparse
import os
import signal
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        os.kill(os.getpid(), signal.SIGSEGV)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    with open(os.environ["CRASHING_SERVER_STARTS"], "a") as f:
        f.write("start\n")
    HTTPServer((args.host, args.port), Handler).serve_forever()
