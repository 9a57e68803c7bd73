"""The teaching app over HTTP: a Starlette app on uvicorn, one page (``page.html``, plain HTML and JS) and
a JSON API the page calls, plus the annotated stream as MJPEG.

    GET  /                              the page
    GET  /stream.mjpg                   the annotated live stream (multipart JPEG)
    GET  /api/state                     everything the page shows (source, actions and clips, recording,
                                        training progress, model, live label)
    POST /api/source      {source}      switch camera / URL / video file
    POST /api/actions     {name}        add an action;  DELETE /api/actions/{name}  remove an empty one
    POST /api/record      {action, countdown, seconds};  POST /api/record/cancel
    GET  /api/clips/{action}/{name}.jpg a clip's middle frame;  DELETE /api/clips/{action}/{name}
    POST /api/train                     train on the clips so far (cancels a run under way)
    POST /api/train/cancel

Errors are ``{"error": "..."}`` with status 400 (a bad request) or 409 (not now: recording, no clips).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import anyio
import cv2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeline.data.video import VideoError
from pipeline.live.serve import multipart_part
from pipeline.teach.examples import ExampleError
from pipeline.teach.recording import RecordingError
from pipeline.teach.studio import Studio

PAGE = Path(__file__).with_name("page.html")


def _error(e: Exception, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": str(e)}, status_code=status)


async def _body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ExampleError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ExampleError("the request body is not a JSON object")
    return body


def make_app(studio: Studio) -> Starlette:
    page = PAGE.read_text()

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def stream(request: Request) -> Response:
        async def frames():
            seen = -1
            while not studio.bus.closed:
                jpeg, seen = await anyio.to_thread.run_sync(studio.bus.wait, seen, 1.0)
                if jpeg is not None:
                    yield multipart_part(jpeg)

        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame", headers={"Cache-Control": "no-store"})

    def state(request: Request) -> Response:
        return JSONResponse(studio.state(), headers={"Cache-Control": "no-store"})

    async def source(request: Request) -> Response:
        body = await _body(request)
        if studio.recorder.status() is not None:
            return _error(RecordingError("a recording is under way: wait for it or cancel it first"), 409)
        try:
            await anyio.to_thread.run_sync(studio.set_source, str(body.get("source", "")))
        except VideoError as e:
            return _error(e)
        return JSONResponse({"source": studio.source})

    async def add_action(request: Request) -> Response:
        body = await _body(request)
        studio.examples.add_action(str(body.get("name", "")).strip())
        return JSONResponse({"actions": studio.examples.actions()})

    def remove_action(request: Request) -> Response:
        studio.examples.remove_action(request.path_params["name"])
        return JSONResponse({"actions": studio.examples.actions()})

    async def record(request: Request) -> Response:
        body = await _body(request)
        try:
            studio.record(str(body.get("action", "")), float(body.get("countdown", 3)), float(body.get("seconds", 3)))
        except RecordingError as e:
            return _error(e, 409)
        except (TypeError, ValueError) as e:
            return _error(ExampleError(f"countdown and seconds are numbers ({e})"))
        return JSONResponse({"recording": studio.recorder.status()})

    def cancel_record(request: Request) -> Response:
        return JSONResponse({"cancelled": studio.recorder.cancel()})

    def thumb(request: Request) -> Response:
        path = studio.examples.clip_path(request.path_params["action"], request.path_params["name"])
        cap = cv2.VideoCapture(str(path))
        cap.set(cv2.CAP_PROP_POS_FRAMES, max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) // 2, 0))
        ok, frame = cap.read()
        cap.release()
        if not ok:
            return _error(ExampleError(f"clip {path.name} cannot be read"), 404)
        scale = 160 / max(frame.shape[1], 1)
        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return Response(cv2.imencode(".jpg", frame)[1].tobytes(), media_type="image/jpeg")

    def delete_clip(request: Request) -> Response:
        studio.examples.delete_clip(request.path_params["action"], request.path_params["name"])
        return JSONResponse({"deleted": request.path_params["name"]})

    def train(request: Request) -> Response:
        try:
            studio.train()
        except ExampleError as e:
            return _error(e, 409)
        return JSONResponse({"training": studio.job_status})

    def cancel_train(request: Request) -> Response:
        studio.cancel_training()
        return JSONResponse({"cancelled": True})

    async def example_error(request: Request, exc: Exception) -> Response:
        return _error(exc)

    routes = [
        Route("/", index),
        Route("/stream.mjpg", stream),
        Route("/api/state", state),
        Route("/api/source", source, methods=["POST"]),
        Route("/api/actions", add_action, methods=["POST"]),
        Route("/api/actions/{name}", remove_action, methods=["DELETE"]),
        Route("/api/record", record, methods=["POST"]),
        Route("/api/record/cancel", cancel_record, methods=["POST"]),
        Route("/api/clips/{action}/{name}.jpg", thumb),
        Route("/api/clips/{action}/{name}", delete_clip, methods=["DELETE"]),
        Route("/api/train", train, methods=["POST"]),
        Route("/api/train/cancel", cancel_train, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={ExampleError: example_error})


def listen(host: str, port: int) -> socket.socket:
    """Bind now, so that a busy port is a one-line error before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ExampleError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port") from None
    sock.listen(64)
    return sock


def serve(studio: Studio, sock: socket.socket) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn handles both), then stop the studio."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(make_app(studio), log_level="warning", timeout_graceful_shutdown=1, lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        studio.close()
