#!/usr/bin/env python3
"""A minimal OTLP/HTTP receiver for benchmarks: answers every POST /v1/traces with 200 and
counts requests and bytes (printed at exit), so that a hub exporting traces can be measured
without a collector. Listens on 127.0.0.1 only. Usage: otlp_sink.py PORT"""
import http.server
import signal
import sys

requests = 0
received = 0


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global requests, received
        n = int(self.headers.get("content-length", 0))
        received += len(self.rfile.read(n))
        requests += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    print(f"otlp sink: {requests} requests, {received} bytes", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
