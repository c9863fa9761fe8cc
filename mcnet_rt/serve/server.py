"""The aiohttp application: the page, the avatar upload, the WebRTC offer, the status; and `serve()`."""
from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ..errors import InputError
from . import avatars
from .peer import Peer
from .scheduler import BatchScheduler, Process, ServerFull
from .security import security_middleware

if TYPE_CHECKING:
    from ..pipeline.session import SessionOptions

log = logging.getLogger("mcnet_rt.serve")
STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}  # the client names one of these, never a path
MAX_STORED_UPLOADS = 16
MAX_OFFER_BYTES = 64 * 1024
MAX_REQUEST_BYTES = avatars.MAX_BYTES + 1024

MakeSession = Callable[[np.ndarray], Any]


@dataclass
class ServerState:
    scheduler: BatchScheduler
    make_session: MakeSession
    peers: set
    uploads: collections.OrderedDict  # id -> encoded bytes, checked, newest last
    names: itertools.count


STATE = web.AppKey("state", ServerState)
SCHEDULER_TASK = web.AppKey("scheduler_task", asyncio.Task)


def error(status: type[web.HTTPException], message: str, **kwargs) -> web.HTTPException:
    """An error the page shows as it is (JSON {"error": message}), also written to the server log."""
    log.warning("%s", message)
    return status(text=json.dumps({"error": message}), content_type="application/json", **kwargs)


def build_app(make_session: MakeSession, process: Process, max_sessions: int, token: str | None = None,
              deadline_s: float = 0.25) -> web.Application:
    """`make_session(avatar RGB uint8)` -> a session (InputError when the avatar has no usable face), run on the
    model thread; `process(sessions, frames)` -> avatar frames, one batch (see scheduler)."""
    app = web.Application(middlewares=[security_middleware(token)], client_max_size=MAX_REQUEST_BYTES)
    def process_video_frames(sessions: list, frames: list) -> list:  # on the model thread
        return process(sessions, [frame.to_ndarray(format="rgb24") for frame in frames])

    state = ServerState(BatchScheduler(process_video_frames, max_sessions, deadline_s), make_session, set(),
                        collections.OrderedDict(), itertools.count(1))
    app[STATE] = state
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", page_file)
    app.router.add_get("/api/samples", list_samples)
    app.router.add_get("/api/samples/{name}", sample_image)
    app.router.add_post("/api/avatar", upload_avatar)
    app.router.add_post("/api/offer", offer)
    app.router.add_get("/api/status", status)
    app.on_startup.append(start_scheduler)
    app.on_shutdown.append(close_peers)
    return app


async def start_scheduler(app: web.Application) -> None:
    task = asyncio.ensure_future(app[STATE].scheduler.run())
    app[SCHEDULER_TASK] = task


async def close_peers(app: web.Application) -> None:
    state: ServerState = app[STATE]
    await asyncio.gather(*(peer.close("the server is stopping") for peer in list(state.peers)))
    app[SCHEDULER_TASK].cancel()
    state.scheduler.shutdown()


async def page(request: web.Request) -> web.Response:
    return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


async def page_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in PAGE_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers={"Content-Type": PAGE_FILES[name]})


async def list_samples(request: web.Request) -> web.Response:
    return web.json_response({"samples": avatars.sample_names()})


async def sample_image(request: web.Request) -> web.Response:
    try:
        data = avatars.sample_bytes(request.match_info["name"])
    except InputError as e:
        raise error(web.HTTPNotFound, str(e)) from None
    return web.Response(body=data, content_type="image/jpeg")


async def upload_avatar(request: web.Request) -> web.Response:
    """The raw image bytes as the body; answers the id to name it by in the offer."""
    state: ServerState = request.app[STATE]
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise error(web.HTTPRequestEntityTooLarge, f"avatar upload: over the limit of {avatars.MAX_BYTES} bytes",
                    max_size=MAX_REQUEST_BYTES) from None
    try:
        image = avatars.decode_image(data, "avatar upload")
    except InputError as e:
        raise error(web.HTTPBadRequest, str(e)) from None
    avatar = secrets.token_urlsafe(16)
    state.uploads[avatar] = data
    while len(state.uploads) > MAX_STORED_UPLOADS:
        state.uploads.popitem(last=False)
    return web.json_response({"avatar": avatar, "width": image.shape[1], "height": image.shape[0]})


def chosen_avatar(state: ServerState, choice: Any) -> np.ndarray:
    """The offer names an uploaded avatar ({"upload": id}) or a sample face ({"sample": name})."""
    if isinstance(choice, dict) and isinstance(choice.get("upload"), str):
        data = state.uploads.get(choice["upload"])
        if data is None:
            raise InputError("the uploaded avatar has expired; upload it again")
        return avatars.decode_image(data, "avatar upload")
    if isinstance(choice, dict) and isinstance(choice.get("sample"), str):
        return avatars.decode_image(avatars.sample_bytes(choice["sample"]), f"sample {choice['sample']}")
    raise InputError("no avatar chosen: upload an image or pick a sample face")


async def offer(request: web.Request) -> web.Response:
    """The page's SDP offer and avatar choice -> an answer, with a new session, or a clear refusal."""
    state: ServerState = request.app[STATE]
    scheduler = state.scheduler
    if len(scheduler.slots) >= scheduler.max_sessions:
        raise error(web.HTTPServiceUnavailable, f"the server is full: {scheduler.max_sessions} of "
                    f"{scheduler.max_sessions} sessions are in use; try again when a caller has left")
    try:
        data = await request.read()
        if len(data) > MAX_OFFER_BYTES:
            raise ValueError(f"{len(data)} bytes is over the limit of {MAX_OFFER_BYTES}")
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
            raise ValueError('expected {"sdp": ..., "type": "offer", "avatar": ...}')
        description = RTCSessionDescription(sdp=body["sdp"], type="offer")
    except ValueError as e:
        raise error(web.HTTPBadRequest, f"malformed offer: {e}") from None
    try:
        image = chosen_avatar(state, body.get("avatar"))
        session = await scheduler.call(lambda: state.make_session(image))
    except InputError as e:
        raise error(web.HTTPBadRequest, str(e)) from None
    try:
        slot = scheduler.open(session)
    except ServerFull as e:
        raise error(web.HTTPServiceUnavailable, str(e)) from None
    name = f"session {next(state.names)}"
    peer = Peer(name, RTCPeerConnection(RTCConfiguration(iceServers=[])), slot, scheduler, state.peers.discard)
    state.peers.add(peer)
    pc = peer.pc
    try:
        await pc.setRemoteDescription(description)
        if not any(t.kind == "video" for t in pc.getTransceivers()):
            raise ValueError("it has no video section (the page sends its camera as video)")
        peer.start_output()
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as e:  # aiortc raises ValueError and others for SDP it cannot use
        await peer.close("malformed SDP offer")
        raise error(web.HTTPBadRequest, f"malformed SDP offer: {type(e).__name__}: {e}") from None
    log.info("%s opened (%d of %d)", name, len(scheduler.slots), scheduler.max_sessions)
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session": name})


async def status(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    return web.json_response({"sessions": len(state.scheduler.slots), "peers": len(state.peers),
                              "max_sessions": state.scheduler.max_sessions, "batches": state.scheduler.batches})


def model_session_functions(model, step, dtype,
                            options: SessionOptions | None = None) -> tuple[MakeSession, Process]:
    """The real thing: one `Session` per caller (with `options`, default SessionOptions()) and `process_batch`
    with one shared per-frame step (a `FrameStep` or a backend's)."""
    from ..pipeline.session import Session, SessionOptions, process_batch

    options = SessionOptions() if options is None else options
    return (lambda image: Session(model, image, options, dtype=dtype, source_name="avatar"),
            functools.partial(process_batch, step))


def serve(app: web.Application, host: str, port: int, token: str | None) -> None:
    """Serve `app` until interrupted, printing the URL to open (with the token, when one is needed)."""

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            await runner.cleanup()
            raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        shown = f"[{host}]" if ":" in host else host
        print(f"serving on http://{shown}:{port}/" + (f"?token={token}" if token else ""), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
