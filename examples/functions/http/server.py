#!/usr/bin/env python3
"""A Freshet HTTP function (stdlib only): a CloudEvents endpoint.

    python3 server.py PORT        # PORT 0 picks a free port; the first stdout line names it
    python3 server.py PORT CERT KEY   # HTTPS with this PEM certificate chain and key

Deploy it with a runtime {"kind": "http", "url": "http://HOST:PORT/", "mode": "binary"}.
Freshet POSTs each event as a CloudEvent 1.0 (docs/functions-protocols.md). This function
answers, by the event's data (its value):
- "skip": 204 No Content, no output;
- anything containing "fail": 500, the event fails (and is retried, then dead-lettered);
- a JSON object: a CloudEvent whose data is the object with "processed_by": "http" added;
- anything else: a CloudEvent whose data is the value uppercased.
The answer is in the mode of the request (binary or structured); its partitionkey is the
input's, so the output record keeps the input's key.
"""

import base64
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STRUCTURED = "application/cloudevents+json"


def transform(data):
    """bytes -> (status, data bytes, content type) or (status, None, None)."""
    if data == b"skip":
        return 204, None, None
    if b"fail" in data:
        return 500, b"failing on purpose", "text/plain"
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        value = None
    if isinstance(value, dict):
        value["processed_by"] = "http"
        return 200, json.dumps(value).encode(), "application/json"
    return 200, data.upper(), "text/plain"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Freshet reuses its connections

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        content_type = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type == STRUCTURED:
            event = json.loads(body)
            if "data_base64" in event:
                data = base64.b64decode(event["data_base64"])
            elif isinstance(event.get("data"), str):
                data = event["data"].encode()
            elif "data" in event:
                data = json.dumps(event["data"]).encode()
            else:
                data = b""
            in_id, key = event.get("id", ""), event.get("partitionkey")
        elif self.headers.get("ce-specversion"):
            data, in_id, key = body, self.headers.get("ce-id", ""), self.headers.get("ce-partitionkey")
        else:
            return self.answer(400, b"not a CloudEvent", "text/plain", {})

        status, out, out_type = transform(data)
        if status != 200:
            return self.answer(status, out or b"", out_type, {})
        attributes = {
            "specversion": "1.0",
            "id": f"{in_id}-enriched",
            "source": "/examples/http-enrich",
            "type": "dev.freshet.example.enriched",
        }
        if key is not None:
            attributes["partitionkey"] = key
        if content_type == STRUCTURED:
            event = dict(attributes, datacontenttype=out_type)
            if out_type == "application/json":
                event["data"] = json.loads(out)
            else:
                event["data"] = out.decode("utf-8", "replace")
            return self.answer(200, json.dumps(event).encode(), STRUCTURED, {})
        return self.answer(200, out, out_type, {f"ce-{k}": v for k, v in attributes.items()})

    def answer(self, status, body, content_type, headers):
        self.send_response(status)
        if content_type and body:
            self.send_header("content-type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 204:
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        sys.stderr.write("server.py: " + (format % args) + "\n")


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if len(sys.argv) > 3:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = context.wrap_socket(server.socket, server_side=True)
        print(f"listening on https://localhost:{server.server_address[1]}/", flush=True)
    else:
        print(f"listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
