"""The studio's web app: one page (``static/``) and the JSON API it calls, each call one or a few
``FramecastClient`` calls to the framecast server the studio was pointed at.

The page uploads through the studio (``/api/upload``: the bytes go on to the server, a copy stays in
the studio's cache for the players), starts jobs (``/api/track``, ``/api/run``: each returns the job's
id once the server accepted it, and the job goes on without the request), and follows them as
server-sent events (``/api/jobs/{id}/events``: ``WatchJob``, so a page reloaded re-attaches and
misses nothing). Errors come back as the server words them, with the page field they concern.
"""

from __future__ import annotations

import json
import queue
import secrets
import tempfile
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from framecast.client.client import FramecastClient
from framecast.client.display import adapter_state, verdict_line
from framecast.client.errors import FramecastError
from framecast.client.studio.media import MediaCache, file_name
from framecast.client.studio.views import (
    UPLOAD_ROLES,
    PageError,
    edit_kwargs,
    event_json,
    final_of_record,
    job_json,
    media_json,
    message_dict,
    page_field,
    plan_json,
    region_kwargs,
    shot_kwargs,
    source_id,
)

STATIC = Path(__file__).parent / "static"
FINAL_EVENTS = ("adapter", "result", "tracked", "error")  # a watched job's last event (tracked: a Track's)
KEEPALIVE_S = 15.0  # a comment line on an event stream this often while its job says nothing
EXPORT_SUFFIX = {"diffusers": "", "comfyui": "-comfyui"}


def error_response(error: Exception, field: str = "run") -> JSONResponse:
    """An error as the page shows it, next to ``field``: a server's as it words it (its code and
    message), a problem of the page's request (PageError, or a value the client refused) as it is."""
    if isinstance(error, FramecastError):
        status = 404 if error.code.name == "NOT_FOUND" else 400
        body = {"code": error.code.name, "message": error.message, "field": page_field("", error.message) if field == "run" else field}
        return JSONResponse({"error": body}, status_code=status)
    if field == "run":
        field = getattr(error, "field", None) or page_field("", str(error))
    return JSONResponse({"error": {"code": "", "message": str(error), "field": field}}, status_code=400)


class Studio:
    """What the app's routes share: the client, the media cache and the server's model settings."""

    def __init__(self, client: FramecastClient, cache_dir: Path):
        self.client = client
        self.media = MediaCache(client, cache_dir)
        self._settings: dict | None = None

    def settings(self) -> dict:
        """The server's model settings (``ServerInfo.model_settings_json``), read once it has them."""
        if self._settings is None:
            text = self.client.server_info().model_settings_json
            if not text:
                return {}
            self._settings = json.loads(text)
        return self._settings

    # ---- the server and media -------------------------------------------------------------------

    def server(self, request: Request) -> JSONResponse:
        try:
            info = self.client.server_info(timeout=10)
        except FramecastError as error:
            return JSONResponse({"address": self.client.address, "ready": False, "error": f"{error.code.name}: {error.message}"})
        settings = self.settings() if info.ready else {}
        return JSONResponse({
            "address": self.client.address, "ready": info.ready, "version": info.version, "model": info.model,
            "device": info.device, "trackers": list(info.trackers), "presets": sorted(settings.get("presets", {})),
            "first_frame_reference": bool(settings.get("first_frame_reference")), "load_error": info.load_error,
            "max_upload_bytes": info.max_upload_bytes,
        })  # fmt: skip

    async def upload(self, request: Request) -> JSONResponse:
        role = request.query_params.get("role", "source")
        name = Path(request.query_params.get("name", "upload")).name or "upload"
        if role not in UPLOAD_ROLES:
            return error_response(PageError("run", f"role must be one of {', '.join(UPLOAD_ROLES)} but is {role!r}"))
        with tempfile.NamedTemporaryFile(dir=self.media.directory, prefix="upload-", delete=False) as file:
            async for chunk in request.stream():
                file.write(chunk)
        path = Path(file.name)
        try:
            ref = await run_in_threadpool(self.client.upload, path, name)
        except (FramecastError, ValueError) as error:
            path.unlink(missing_ok=True)
            return error_response(error, role)
        await run_in_threadpool(self.media.keep, ref.id, name, path)
        return JSONResponse({"media": media_json(ref)})

    def media_file(self, request: Request) -> Response:
        media_id, name = request.path_params["media_id"], request.path_params["name"]
        try:
            path = self.media.path(media_id, name)
        except (FramecastError, ValueError) as error:
            return error_response(error)
        if "download" in request.query_params:
            return FileResponse(path, filename=name)
        return FileResponse(path, headers={"Cache-Control": "max-age=31536000, immutable"})

    def overlay(self, request: Request) -> Response:
        try:
            png = self.media.overlay_png(request.path_params["media_id"], int(request.path_params["index"]))
        except (FramecastError, ValueError) as error:
            return error_response(error)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=31536000, immutable"})

    # ---- jobs -----------------------------------------------------------------------------------

    @staticmethod
    def _accepted(events) -> str:
        """The id of the job a job call's stream started, the stream then closed: the job goes on."""
        try:
            return next(iter(events)).job_id
        finally:
            events.close()

    async def track(self, request: Request) -> JSONResponse:
        body = await request.json()

        def start() -> str:
            return self._accepted(self.client.track(source_id(body), **region_kwargs(body), **shot_kwargs(body)))

        try:
            return JSONResponse({"job_id": await run_in_threadpool(start)})
        except (FramecastError, ValueError, TypeError) as error:
            return error_response(error, getattr(error, "field", "region"))

    def _plans(self, body: dict, adapter: str) -> tuple[dict, dict, dict]:
        train, propagate = edit_kwargs(body, bool(self.settings().get("first_frame_reference")))
        # The propagation is planned on the base model: its adapter does not exist before its training.
        plans = {"train": plan_json("train", self.client.plan_train(adapter, **train)),
                 "propagate": plan_json("propagate", self.client.plan_propagate("", **propagate))}  # fmt: skip
        return plans, train, propagate

    async def plan(self, request: Request) -> JSONResponse:
        body = await request.json()
        try:
            plans, _, _ = await run_in_threadpool(self._plans, body, body.get("adapter") or "edit-plan")
        except (FramecastError, ValueError, TypeError) as error:
            return error_response(error)
        return JSONResponse(plans)

    async def run(self, request: Request) -> JSONResponse:
        """Plan the edit's two jobs, then submit its training and at once the propagation that uses its
        adapter (the server runs them in order): as ``framecast edit`` does."""
        body = await request.json()
        adapter = (body.get("adapter") or "").strip() or f"edit-{secrets.token_hex(4)}"

        def submit() -> dict:
            plans, train, propagate = self._plans(body, adapter)
            if any(plan["problems"] for plan in plans.values()):
                return {"plans": plans, "refused": True}
            train_id = self._accepted(self.client.train(adapter, **train))
            try:
                propagate_id = self._accepted(self.client.propagate(adapter, **propagate))
            except FramecastError:
                self.client.cancel_job(train_id)  # no training left to run for nothing
                raise
            return {"plans": plans, "adapter": adapter, "train_job": train_id, "propagate_job": propagate_id}

        try:
            answer = await run_in_threadpool(submit)
        except (FramecastError, ValueError, TypeError) as error:
            return error_response(error)
        return JSONResponse(answer, status_code=400 if answer.get("refused") else 200)

    def events(self, request: Request) -> StreamingResponse:
        """A job's events as server-sent events, from its state now to its end (``WatchJob``)."""
        job_id = request.path_params["job_id"]
        found: queue.Queue = queue.Queue()
        stop = threading.Event()

        def read() -> None:
            final, record = False, None
            try:
                for event in self.client.watch_job(job_id):
                    data = event_json(event)
                    record = event.accepted if data["type"] == "accepted" else record
                    final = final or data["type"] in FINAL_EVENTS
                    found.put(data)
                    if stop.is_set():
                        return
                if not final and record is not None and (data := final_of_record(record)) is not None:
                    found.put(data)  # a job that ended before the server restarted: its record alone
            except FramecastError as error:
                if not final:
                    found.put({"type": "error", "job_id": job_id, "code": error.code.name, "message": error.message})
            finally:
                found.put(None)

        threading.Thread(target=read, name=f"studio-watch-{job_id}", daemon=True).start()

        def stream():
            try:
                while True:
                    try:
                        data = found.get(timeout=KEEPALIVE_S)
                    except queue.Empty:
                        yield ": keep-alive\n\n"
                        continue
                    if data is None:
                        yield "event: end\ndata: {}\n\n"
                        return
                    yield f"data: {json.dumps(data)}\n\n"
            finally:
                stop.set()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def cancel(self, request: Request) -> JSONResponse:
        try:
            return JSONResponse({"job": job_json(self.client.cancel_job(request.path_params["job_id"]))})
        except FramecastError as error:
            return error_response(error)

    def jobs(self, request: Request) -> JSONResponse:
        try:
            return JSONResponse({"jobs": [job_json(info) for info in self.client.list_jobs(limit=50)]})
        except FramecastError as error:
            return error_response(error)

    def fidelity_plot(self, request: Request) -> Response:
        from framecast.client.plot import fidelity_png

        try:
            info = self.client.get_job(request.path_params["job_id"])
        except FramecastError as error:
            return error_response(error)
        result = info.propagate_result
        if not info.HasField("propagate_result") or not result.fidelity.curve:
            return error_response(PageError("run", "this job has no fidelity curve"))
        png = fidelity_png([("fidelity", list(result.fidelity.curve))], result.fidelity.threshold, f"edit {verdict_line(result)}")
        return Response(png, media_type="image/png")

    # ---- adapters -------------------------------------------------------------------------------

    def adapters(self, request: Request) -> JSONResponse:
        try:
            listed = self.client.list_adapters()
        except FramecastError as error:
            return error_response(error)
        return JSONResponse({"adapters": [message_dict(info) | {"state": adapter_state(info.state)} for info in listed]})

    def export(self, request: Request) -> Response:
        name, layout = request.path_params["name"], request.query_params.get("format", "diffusers")
        try:
            data = self.client.export_adapter(name, format=layout)
        except (FramecastError, ValueError) as error:
            return error_response(error, "adapters")
        filename = f"{name}{EXPORT_SUFFIX.get(layout, '')}.safetensors"
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip

    def delete_adapter(self, request: Request) -> JSONResponse:
        try:
            return JSONResponse({"deleted": self.client.delete_adapter(request.path_params["name"])})
        except FramecastError as error:
            return error_response(error, "adapters")


def make_app(client: FramecastClient, cache_dir: Path) -> Starlette:
    """The studio's app on ``client``'s server, keeping its copies of media under ``cache_dir``."""
    studio = Studio(client, cache_dir)
    file_name("sha256:0")  # the cache's naming, checked once at start

    def page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    routes = [
        Route("/", page),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/server", studio.server),
        Route("/api/upload", studio.upload, methods=["POST"]),
        Route("/api/media/{media_id}/{name}", studio.media_file),
        Route("/api/overlay/{media_id}/{index:int}.png", studio.overlay),
        Route("/api/track", studio.track, methods=["POST"]),
        Route("/api/plan", studio.plan, methods=["POST"]),
        Route("/api/run", studio.run, methods=["POST"]),
        Route("/api/jobs", studio.jobs),
        Route("/api/jobs/{job_id}/events", studio.events),
        Route("/api/jobs/{job_id}/cancel", studio.cancel, methods=["POST"]),
        Route("/api/jobs/{job_id}/fidelity.png", studio.fidelity_plot),
        Route("/api/adapters", studio.adapters),
        Route("/api/adapters/{name}/export", studio.export),
        Route("/api/adapters/{name}", studio.delete_adapter, methods=["DELETE"]),
    ]
    return Starlette(routes=routes)
