"""The aiohttp application: the page, the avatar upload, the WebRTC offer, the status; and `serve()`."""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import secrets
import signal
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import OperationError

from ..errors import InputError
from . import avatars
from .limits import (BODY_TIMEOUT_S, HEADER_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_MEDIA_SECTIONS, MAX_OFFER_BYTES,
                     parse_json)
from .peer import Peer, close_connection
from .scheduler import BatchScheduler, Process, ServerFull
from .security import security_middleware

if TYPE_CHECKING:
    from ..pipeline.session import SessionOptions

log = logging.getLogger("mcnet_rt.serve")
STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}  # the client names one of these, never a path
MAX_STORED_UPLOADS = 16
MAX_REQUEST_BYTES = avatars.MAX_BYTES + 1024
# What aiortc's SDP parser raises on malformed text (seen fuzzing 1,500 mutated offers), and what
# setRemoteDescription raises for a parsed offer it cannot use (aiortc 1.16: ValueError for missing ICE credentials,
# no RTCP mux or a candidate after end-of-candidates; OperationError for no common codec): the caller's errors
# (400). Anything else, a TypeError in the ICE set-up say, is ours: 500, logged with its traceback (security.py).
SDP_PARSE_ERRORS = (ValueError, IndexError, KeyError, AssertionError, StopIteration)
SDP_REFUSALS = (ValueError, OperationError)
STOP_TIMEOUT_S = 3.0  # closing the callers' connections when the server stops
REFUSAL_STATUS = {400: web.HTTPBadRequest, 503: web.HTTPServiceUnavailable}

MakeSession = Callable[[np.ndarray], Any]


class CallRefused(Exception):
    """A call that cannot be answered, with the HTTP status the page gets and the message it shows (picklable: a
    cluster replica raises it and the ingress answers it)."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None):
        super().__init__(status, message, retry_after_s)
        self.status, self.message, self.retry_after_s = status, message, retry_after_s


class Engine:
    """One model's callers: the batching scheduler, their peer connections and sessions. `serve` runs one in its
    own process; each cluster replica runs one on its GPU."""

    def __init__(self, make_session: MakeSession, process: Process, max_sessions: int, deadline_s: float = 0.25,
                 idle_s: float = IDLE_TIMEOUT_S, ice_servers: list[dict] | None = None):
        def process_video_frames(sessions: list, frames: list) -> list:  # on the model thread
            return process(sessions, [frame.to_ndarray(format="rgb24") for frame in frames])

        self.scheduler = BatchScheduler(process_video_frames, max_sessions, deadline_s)
        self.make_session = make_session
        self.peers: set[Peer] = set()
        self.names = itertools.count(1)
        self.idle_s = idle_s
        self.ice_servers = [RTCIceServer(**server) for server in ice_servers or []]
        self.task: asyncio.Task | None = None
        self.opening = 0  # offers past their checks whose session is being prepared

    async def start(self) -> None:
        if self.task is None:
            self.task = asyncio.ensure_future(self.scheduler.run())

    async def stop(self) -> None:
        """Close every caller (at most STOP_TIMEOUT_S: a connection whose far end is gone must not hold the stop),
        then the scheduler."""
        closing = asyncio.gather(*(peer.close("the server is stopping") for peer in list(self.peers)))
        try:
            await asyncio.wait_for(closing, STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("closing the callers' connections took over %g s; stopping anyway", STOP_TIMEOUT_S)
        if self.task is not None:
            self.task.cancel()
        self.scheduler.shutdown()

    def full(self) -> str | None:
        """Why a new call would be refused now (None: there is a free slot). An offer holds its place while its
        avatar is prepared, so a burst of offers cannot make more peer connections and sessions than the limit."""
        scheduler = self.scheduler
        if len(scheduler.slots) + self.opening < scheduler.max_sessions:
            return None
        return (f"the server is full: {scheduler.max_sessions} of {scheduler.max_sessions} sessions are in use; "
                "try again when a caller has left")

    async def answer(self, description: RTCSessionDescription, image: np.ndarray) -> tuple[Peer, dict]:
        """A new caller: its peer and the SDP answer, or CallRefused. The avatar is prepared only for an offer that
        aiortc accepted; whatever was made for a refused one is closed."""
        reason = self.full()
        if reason is not None:
            raise CallRefused(503, reason)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        self.opening += 1
        try:
            session = await self.offered_session(pc, description, image)
        except BaseException:
            await close_connection(pc)
            raise
        finally:
            self.opening -= 1
        scheduler = self.scheduler
        try:
            slot = scheduler.open(session)
        except ServerFull as e:  # another caller took the last slot while this avatar was prepared
            scheduler.release(session)
            await close_connection(pc)
            raise CallRefused(503, str(e)) from None
        name = f"session {next(self.names)}"
        peer = Peer(name, pc, slot, scheduler, self.peers.discard, self.idle_s)
        self.peers.add(peer)
        try:
            peer.start()
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await peer.close("its answer could not be made")
            raise
        log.info("%s opened (%d of %d)", name, len(scheduler.slots), scheduler.max_sessions)
        return peer, {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session": name}

    async def offered_session(self, pc: RTCPeerConnection, description: RTCSessionDescription,
                              image: np.ndarray) -> Any:
        """Set the caller's offer on `pc` (400 if aiortc refuses it), then prepare the avatar's session."""
        try:
            await pc.setRemoteDescription(description)
        except SDP_REFUSALS as e:
            raise CallRefused(400, f"malformed SDP offer: {type(e).__name__}: {e}") from None
        from ..pipeline.session import NoSourceFace

        try:
            return await self.scheduler.call(lambda: self.make_session(image))
        except NoSourceFace:
            raise CallRefused(400, "no face found in this avatar; choose a photo with one clearly visible face, "
                              "looking at the camera") from None
        except InputError as e:
            raise CallRefused(400, str(e)) from None

    def status(self) -> dict:
        scheduler = self.scheduler
        return {"sessions": len(scheduler.slots), "peers": len(self.peers), "max_sessions": scheduler.max_sessions,
                "batches": scheduler.batches}


class LocalCalls:
    """`serve`'s calls: answered by the Engine in this process."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def full(self) -> str | None:
        return self.engine.full()

    async def answer(self, sdp: str, image: np.ndarray) -> dict:
        return (await self.engine.answer(RTCSessionDescription(sdp=sdp, type="offer"), image))[1]

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()

    def status(self) -> dict:
        return self.engine.status()


STATE = web.AppKey("state", Engine)  # serve's engine (tests look into its scheduler and peers)
CALLS = web.AppKey("calls", object)  # LocalCalls, or the cluster's forwarder: full(), answer(), start/stop, status
UPLOADS = web.AppKey("uploads", collections.OrderedDict)  # id -> encoded bytes, checked, newest last
ICE_SERVERS = web.AppKey("ice_servers", list)


def error(status: type[web.HTTPException], message: str, **kwargs) -> web.HTTPException:
    """An error the page shows as it is (JSON {"error": message}), also written to the server log."""
    log.warning("%s", message)
    return status(text=json.dumps({"error": message}), content_type="application/json", **kwargs)


def build_app(make_session: MakeSession, process: Process, max_sessions: int, token: str | None = None,
              deadline_s: float = 0.25, idle_s: float = IDLE_TIMEOUT_S) -> web.Application:
    """`make_session(avatar RGB uint8)` -> a session (InputError when the avatar has no usable face; `close()`d
    when its caller leaves or is refused), run on the model thread; `process(sessions, frames)` -> avatar frames,
    one batch (see scheduler); a caller without a camera frame for `idle_s` is closed."""
    engine = Engine(make_session, process, max_sessions, deadline_s, idle_s)
    app = ingress_app(LocalCalls(engine), token)
    app[STATE] = engine
    return app


def ingress_app(calls: Any, token: str | None, ice_servers: list[dict] | None = None) -> web.Application:
    """The page, the avatar upload, the offer and the status behind the security checks; offers are answered by
    `calls` (this process's Engine for `serve`, a cluster's replicas for `cluster`); `ice_servers` (the browser's
    RTCIceServer dicts: urls, username, credential) go to the page."""
    app = web.Application(middlewares=[security_middleware(token)], client_max_size=MAX_REQUEST_BYTES)
    app[CALLS] = calls
    app[ICE_SERVERS] = list(ice_servers or [])
    app[UPLOADS] = collections.OrderedDict()
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", page_file)
    app.router.add_get("/api/samples", list_samples)
    app.router.add_get("/api/samples/{name}", sample_image)
    app.router.add_post("/api/avatar", upload_avatar)
    app.router.add_post("/api/offer", offer)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/config", page_config)
    app.on_startup.append(lambda app: calls.start())
    app.on_shutdown.append(lambda app: calls.stop())
    return app


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
    uploads = request.app[UPLOADS]
    data = await read_body(request, "avatar upload", avatars.MAX_BYTES)
    try:
        image = avatars.decode_image(data, "avatar upload")
    except InputError as e:
        raise error(web.HTTPBadRequest, str(e)) from None
    avatar = secrets.token_urlsafe(16)
    uploads[avatar] = data
    while len(uploads) > MAX_STORED_UPLOADS:
        uploads.popitem(last=False)
    return web.json_response({"avatar": avatar, "width": image.shape[1], "height": image.shape[0]})


def chosen_avatar(uploads: collections.OrderedDict, choice: Any) -> np.ndarray:
    """The offer names an uploaded avatar ({"upload": id}) or a sample face ({"sample": name})."""
    if isinstance(choice, dict) and isinstance(choice.get("upload"), str):
        data = uploads.get(choice["upload"])
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


async def offer(request: web.Request) -> web.Response:
    """The page's SDP offer and avatar choice -> an answer, with a new session, or a clear refusal."""
    calls = request.app[CALLS]
    reason = calls.full()
    if reason is not None:
        raise error(web.HTTPServiceUnavailable, reason)
    try:
        body, description = checked_offer(await read_body(request, "offer", MAX_OFFER_BYTES))
    except ValueError as e:
        raise error(web.HTTPBadRequest, f"malformed offer: {e}") from None
    try:
        image = chosen_avatar(request.app[UPLOADS], body.get("avatar"))
        return web.json_response(await calls.answer(description.sdp, image))
    except InputError as e:
        raise error(web.HTTPBadRequest, str(e)) from None
    except CallRefused as e:
        headers = {"Retry-After": str(e.retry_after_s)} if e.retry_after_s is not None else None
        raise error(REFUSAL_STATUS[e.status], e.message, headers=headers) from None


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[CALLS].status())


async def page_config(request: web.Request) -> web.Response:
    """What the page needs besides its files: the STUN/TURN servers its connection may use."""
    return web.json_response({"iceServers": request.app[ICE_SERVERS]})


def model_session_functions(model, step, dtype,
                            options: SessionOptions | None = None) -> tuple[MakeSession, Process]:
    """The real thing: one `Session` per caller (with `options`, default SessionOptions()), every one running the
    shared per-frame `step` (a `FrameStep` or a backend's), and `process_batch`."""
    from ..pipeline.session import Session, SessionOptions, process_batch

    options = SessionOptions() if options is None else options
    return (lambda image: Session(model, image, options, dtype=dtype, step=step, source_name="avatar"),
            process_batch)


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
