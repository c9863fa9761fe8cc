"""The aiohttp application: the page, the avatar upload, the WebRTC offer, the status; and `serve()`."""
from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import logging
import secrets
import signal
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import InvalidAccessError, OperationError

from ..errors import InputError
from . import avatars
from .limits import (BODY_TIMEOUT_S, HEADER_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_MEDIA_SECTIONS, MAX_OFFER_BYTES,
                     parse_json)
from .peer import Peer, close_connection
from .scheduler import BatchScheduler, Process
from .security import security_middleware

if TYPE_CHECKING:
    from ..pipeline.session import SessionOptions

log = logging.getLogger("mcnet_rt.serve")
STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}  # the client names one of these, never a path
MAX_STORED_UPLOADS = 16
MAX_REQUEST_BYTES = avatars.MAX_BYTES + 1024
# What aiortc's SDP parser raises on malformed text (seen fuzzing 1,500 mutated offers), and what
# setRemoteDescription raises for a parsed offer it cannot use: the caller's errors (400). Anything else is ours (500).
SDP_PARSE_ERRORS = (ValueError, IndexError, KeyError, AssertionError, StopIteration)
SDP_REFUSALS = (ValueError, InvalidAccessError, OperationError)
STOP_TIMEOUT_S = 3.0  # closing the callers' connections when the server stops

MakeSession = Callable[[np.ndarray], Any]


@dataclass
class ServerState:
    scheduler: BatchScheduler
    make_session: MakeSession
    peers: set
    uploads: collections.OrderedDict  # id -> encoded bytes, checked, newest last
    names: itertools.count
    idle_s: float
    opening: int = 0  # offers past their checks whose session is being prepared


STATE = web.AppKey("state", ServerState)
SCHEDULER_TASK = web.AppKey("scheduler_task", asyncio.Task)


def error(status: type[web.HTTPException], message: str, **kwargs) -> web.HTTPException:
    """An error the page shows as it is (JSON {"error": message}), also written to the server log."""
    log.warning("%s", message)
    return status(text=json.dumps({"error": message}), content_type="application/json", **kwargs)


def build_app(make_session: MakeSession, process: Process, max_sessions: int, token: str | None = None,
              deadline_s: float = 0.25, idle_s: float = IDLE_TIMEOUT_S) -> web.Application:
    """`make_session(avatar RGB uint8)` -> a session (InputError when the avatar has no usable face; `close()`d
    when its caller leaves or is refused), run on the model thread; `process(sessions, frames)` -> avatar frames,
    one batch (see scheduler); a caller without a camera frame for `idle_s` is closed."""
    app = web.Application(middlewares=[security_middleware(token)], client_max_size=MAX_REQUEST_BYTES)
    def process_video_frames(sessions: list, frames: list) -> list:  # on the model thread
        return process(sessions, [frame.to_ndarray(format="rgb24") for frame in frames])

    state = ServerState(BatchScheduler(process_video_frames, max_sessions, deadline_s), make_session, set(),
                        collections.OrderedDict(), itertools.count(1), idle_s)
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
    """Close every caller (at most STOP_TIMEOUT_S: a connection whose far end is gone must not hold the stop),
    then the scheduler."""
    state: ServerState = app[STATE]
    closing = asyncio.gather(*(peer.close("the server is stopping") for peer in list(state.peers)))
    try:
        await asyncio.wait_for(closing, STOP_TIMEOUT_S)
    except asyncio.TimeoutError:
        log.warning("closing the callers' connections took over %g s; stopping anyway", STOP_TIMEOUT_S)
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


async def read_body(request: web.Request, what: str, limit: int) -> bytes:
    """The request's body: at most `limit` bytes (413), arrived within BODY_TIMEOUT_S (408)."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            data = await request.read()
    except TimeoutError:
        raise error(web.HTTPRequestTimeout, f"{what}: the body did not arrive within {BODY_TIMEOUT_S:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        data = None
    if data is None or len(data) > limit:
        raise error(web.HTTPRequestEntityTooLarge, f"{what}: over the limit of {limit} bytes", max_size=limit)
    return data


async def upload_avatar(request: web.Request) -> web.Response:
    """The raw image bytes as the body; answers the id to name it by in the offer."""
    state: ServerState = request.app[STATE]
    data = await read_body(request, "avatar upload", avatars.MAX_BYTES)
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


def checked_offer(data: bytes) -> tuple[dict, RTCSessionDescription]:
    """The offer's JSON and its SDP, refused (ValueError) before anything is made for it: not JSON, too large or
    deep, an SDP aiortc cannot parse, too many media sections, no camera sent, a media section without DTLS
    parameters."""
    body = parse_json(data, MAX_OFFER_BYTES)
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise ValueError('expected {"sdp": ..., "type": "offer", "avatar": ...}')
    try:
        parsed = aiortc_sdp.SessionDescription.parse(body["sdp"])
    except SDP_PARSE_ERRORS as e:
        raise ValueError(f"its SDP does not parse ({type(e).__name__}: {e})") from None
    if len(parsed.media) > MAX_MEDIA_SECTIONS:
        raise ValueError(f"{len(parsed.media)} media sections is over the limit of {MAX_MEDIA_SECTIONS}")
    if not any(m.kind == "video" and m.direction in (None, "sendrecv", "sendonly") for m in parsed.media):
        raise ValueError("it sends no video (the page sends its camera as video)")
    if any(m.dtls is None for m in parsed.media):
        raise ValueError("a media section has no DTLS fingerprint and setup role")
    return body, RTCSessionDescription(sdp=body["sdp"], type="offer")


def refuse_if_full(state: ServerState) -> None:
    """503 when every session is in use or being opened (an offer holds its place while its avatar is prepared,
    so a burst of offers cannot make more peer connections and sessions than --max-sessions)."""
    limit = state.scheduler.max_sessions
    if len(state.scheduler.slots) + state.opening >= limit:
        raise error(web.HTTPServiceUnavailable, f"the server is full: {limit} of {limit} sessions are in use; try "
                    "again when a caller has left")


async def offer(request: web.Request) -> web.Response:
    """The page's SDP offer and avatar choice -> an answer, with a new session, or a clear refusal. The avatar is
    prepared only for an offer that aiortc accepted; whatever was made for a refused one is closed."""
    state: ServerState = request.app[STATE]
    scheduler = state.scheduler
    refuse_if_full(state)
    try:
        body, description = checked_offer(await read_body(request, "offer", MAX_OFFER_BYTES))
    except ValueError as e:
        raise error(web.HTTPBadRequest, f"malformed offer: {e}") from None
    refuse_if_full(state)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    state.opening += 1
    try:
        slot = scheduler.open(await offered_session(state, pc, description, body.get("avatar")))
    except BaseException:
        await close_connection(pc)
        raise
    finally:
        state.opening -= 1
    name = f"session {next(state.names)}"
    peer = Peer(name, pc, slot, scheduler, state.peers.discard, state.idle_s)
    state.peers.add(peer)
    try:
        peer.start()
        await pc.setLocalDescription(await pc.createAnswer())
    except BaseException:
        await peer.close("its answer could not be made")
        raise
    log.info("%s opened (%d of %d)", name, len(scheduler.slots), scheduler.max_sessions)
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session": name})


async def offered_session(state: ServerState, pc: RTCPeerConnection, description: RTCSessionDescription,
                          choice: Any) -> Any:
    """Set the caller's offer on `pc` (400 if aiortc refuses it), then prepare the chosen avatar's session."""
    try:
        await pc.setRemoteDescription(description)
    except SDP_REFUSALS as e:
        raise error(web.HTTPBadRequest, f"malformed SDP offer: {type(e).__name__}: {e}") from None
    from ..pipeline.session import NoSourceFace

    try:
        image = chosen_avatar(state, choice)
        return await state.scheduler.call(lambda: state.make_session(image))
    except NoSourceFace:
        raise error(web.HTTPBadRequest, "no face found in this avatar; choose a photo with one clearly visible "
                    "face, looking at the camera") from None
    except InputError as e:
        raise error(web.HTTPBadRequest, str(e)) from None


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


def serve(app: web.Application, host: str, port: int, token: str | None) -> int:
    """Serve `app` until SIGINT, SIGTERM or SIGHUP, printing the URL to open (with the token, when one is needed);
    returns the signal's number. The signal only sets an event that the loop waits on: the stop then runs in
    order (callers closed, at most STOP_TIMEOUT_S; requests in flight given 1 s), never from inside whatever
    coroutine the signal happened to interrupt, which could leave aiortc's own closing half done and wait on it
    for ever."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, lambda s=signum: stop.done() or stop.set_result(s))
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=HEADER_TIMEOUT_S, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            await runner.cleanup()
            raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        try:
            print(f"serving on {page_url(host, runner.addresses[0][1], token)}", flush=True)
            return await stop
        finally:
            log.info("stopping")
            await runner.cleanup()

    return asyncio.run(main())


def page_url(host: str, port: int, token: str | None) -> str:
    """The URL to open: the port really bound (--port 0 picks one), the token percent-encoded."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={urllib.parse.quote(token, safe='')}" if token else "")
