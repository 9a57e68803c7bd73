"""The annotated live stream over HTTP, for a machine with no screen: MJPEG plus a minimal page.

``/`` is an HTML page showing ``/stream.mjpg`` (multipart JPEG, what every browser plays natively) and the
current label, polled from ``/status`` (JSON). Each client gets the newest frame when it is ready for one,
so a slow client skips frames instead of queueing them.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from pipeline.inference.outputs import OutputError

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>yolo-gru-actions live</title>
<style>body{font-family:sans-serif;background:#111;color:#eee;margin:.5em 1em}
img{display:block;width:100%;height:auto;max-height:calc(100vh - 6em);object-fit:contain}
#label{font-size:2em;margin:.2em 0}#info{color:#aaa}</style></head>
<body><div id="label">waiting for frames...</div><div id="info"></div><img id="stream" src="/stream.mjpg" alt="live stream">
<script>
async function poll(){
  try{const s=await (await fetch('/status',{cache:'no-store'})).json();
      document.getElementById('label').textContent=s.text;
      document.getElementById('info').textContent=s.fps.toFixed(1)+' fps, '+Math.round(s.latency_ms)+' ms'+(s.status?' | '+s.status:'');}
  catch(e){document.getElementById('info').textContent='disconnected';}
  setTimeout(poll,300);}
poll();
</script></body></html>
"""


class FrameBus:
    """The newest JPEG of a stream and who waits for it: every viewer takes the newest frame when it is ready
    for one, so a slow viewer skips frames instead of queueing them."""

    def __init__(self, quality: int = 80):
        self.quality = quality
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self.closed = False

    def publish(self, frame: np.ndarray) -> None:
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            with self._cond:
                self._jpeg = jpeg.tobytes()
                self._seq += 1
                self._cond.notify_all()

    def wait(self, seen: int, timeout: float = 1.0) -> tuple[bytes | None, int]:
        """The newest JPEG and its number once it is newer than ``seen`` (None after ``timeout`` or close)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq != seen or self.closed, timeout=timeout)
            if self.closed or self._seq == seen:
                return None, seen
            return self._jpeg, self._seq

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def multipart_part(jpeg: bytes) -> bytes:
    """One frame of a ``multipart/x-mixed-replace; boundary=frame`` stream."""
    return b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n"


class FrameServer:
    """Serve the newest annotated frame as MJPEG on ``host:port`` (port 0: any free port)."""

    def __init__(self, address: str, quality: int = 80):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise OutputError(f"--serve {address}: give HOST:PORT, e.g. 127.0.0.1:8080")
        self.bus = FrameBus(quality)
        self._lock = threading.Lock()
        self._status: dict = {"label": "waiting", "score": 0.0, "text": "waiting for frames...", "fps": 0.0, "latency_ms": 0.0, "status": None}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the console for the demo
                pass

            def do_GET(self) -> None:
                if self.path in ("/", "/index.html"):
                    self._send(PAGE.encode(), "text/html; charset=utf-8")
                elif self.path == "/status":
                    with server._lock:
                        body = json.dumps(server._status).encode()
                    self._send(body, "application/json")
                elif self.path.startswith("/stream.mjpg"):
                    self._stream()
                else:
                    self.send_error(HTTPStatus.NOT_FOUND)

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = -1
                try:
                    while not server.bus.closed:
                        jpeg, seen = server.bus.wait(seen)
                        if jpeg is not None:
                            self.wfile.write(multipart_part(jpeg))
                except (BrokenPipeError, ConnectionResetError):
                    return  # the viewer went away

        try:
            self._httpd = ThreadingHTTPServer((host, int(port)), Handler)
        except OSError as e:
            raise OutputError(f"--serve {address}: cannot listen there ({e.strerror or e})") from None
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name="mjpeg")
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def publish(self, frame: np.ndarray, status: dict) -> None:
        """Hand the newest annotated frame and its status to every viewer."""
        with self._lock:
            self._status = status
        self.bus.publish(frame)

    def close(self) -> None:
        self.bus.close()
        self._httpd.shutdown()
        self._httpd.server_close()
