"""rlrun-label: a local web page on which people compare clips and answers (Christiano et al. 2017; Ouyang et al.
2022), writing what they say where rlrun's reward models read it.

    rlrun-label outputs/<run>/segments.npz              # pairs of clips of a segments file
    rlrun-label outputs/<pbrl run>                        # the pairs a pbrl run with algo.labeler=human asks about
    rlrun-label pairs.jsonl                               # two responses to a prompt
    rlrun-label rankings.jsonl                            # K responses to order

The page is served on 127.0.0.1 (``--port``); ``--host`` with another address needs ``--allow-remote``, and then
every request needs the random token printed in the URL. The questions, answers and their guarantees are
:mod:`rlrun.rlhf.labelling`'s; this module only routes HTTP requests to it (Starlette, served by uvicorn) and
renders clips (:class:`rlrun.envs.render.SegmentRenderer`) as PNG film strips that the page plays in a loop, both
clips of a pair on one clock. The page is plain HTML and JavaScript (``label_page.html``), no build step.

Needs the ``label`` extra: ``pip install -e ".[label]"``.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import secrets
import socket
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from rlrun.core.config import ConfigError
from rlrun.envs.render import SegmentRenderer
from rlrun.rlhf.labelling import AnswerError, LabelStore, default_output, open_source

PAGE = Path(__file__).with_name("label_page.html")
DEFAULT_PORT = 8765
CLIP_CACHE = 64  # film strips kept in memory
MAX_BODY = 64 * 1024  # bytes of a JSON request body


def _strip(frames: Any) -> bytes:
    """(L, H, W, 3) uint8 frames as one PNG of the frames stacked top to bottom."""
    from PIL import Image

    frames = frames.reshape(-1, *frames.shape[2:])
    out = io.BytesIO()
    Image.fromarray(frames).save(out, format="PNG", optimize=False, compress_level=3)
    return out.getvalue()


class Clips:
    """Film strips of a segment source's clips, rendered on first request and cached."""

    def __init__(self, source: Any):
        self.source = source
        self.renderer = SegmentRenderer(source.env_id, tuple(source.obs_shape))
        self.cache: OrderedDict[int, tuple[bytes, int]] = OrderedDict()
        self.lock = threading.Lock()

    def strip(self, segment_id: int) -> tuple[bytes, int]:
        """(PNG bytes, number of frames); KeyError/OSError for an unknown segment."""
        with self.lock:
            if segment_id in self.cache:
                self.cache.move_to_end(segment_id)
                return self.cache[segment_id]
            frames = self.renderer.frames(self.source.clip(segment_id))
            self.cache[segment_id] = (_strip(frames), len(frames))
            while len(self.cache) > CLIP_CACHE:
                self.cache.popitem(last=False)
            return self.cache[segment_id]


def build_app(store: LabelStore, token: str | None = None, clips: Clips | None = None) -> Any:
    """The Starlette application: the page at ``/``, the JSON API under ``/api/``, clips as PNG film strips.

    Every request needs ``token`` (a ``token`` query parameter or an ``X-Token`` header) when it is not None.
    Answers are refused with a 4xx and a JSON ``{"error": message}``, never a crash: malformed JSON, unknown
    questions, questions not served to the session, labels outside {0, 0.5, 1}.
    """
    import json

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    page = PAGE.read_text(encoding="utf-8")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def authorized(request: Request) -> bool:
        given = request.query_params.get("token") or request.headers.get("x-token") or ""
        return token is None or secrets.compare_digest(given, token)

    def describe(item: Any) -> dict[str, Any] | None:
        if item is None:
            return None
        out = {"id": item.id, "kind": item.kind, **item.data}
        if item.kind == "segments" and clips is not None:
            out["fps"] = clips.renderer.fps
        return out

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise AnswerError(413, f"request body of {len(raw)} bytes: expected at most {MAX_BODY}")
        try:
            data = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AnswerError(400, "the request body is not JSON: expected an object") from None
        if not isinstance(data, dict) or not isinstance(data.get("session"), str) or not data["session"]:
            raise AnswerError(400, "expected a JSON object with a non-empty 'session' string")
        return data

    def guarded(handler):
        async def wrapped(request: Request):
            if not authorized(request):
                return error(403, "missing or wrong access token: open the URL rlrun-label printed")
            try:
                return await handler(request)
            except AnswerError as exc:
                return error(exc.status, str(exc))
        return wrapped

    async def index(request: Request):
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def next_item(request: Request):
        session = request.query_params.get("session", "")
        if not session:
            raise AnswerError(400, "expected a 'session' query parameter")
        return JSONResponse({"item": describe(store.next_item(session)), "progress": store.progress(),
                             "kind": store.source.kind})

    async def answer(request: Request):
        data = await body(request)
        given = {key: data[key] for key in ("label", "ranking") if key in data}
        record = store.answer(data["session"], data.get("item"), given, data.get("labeler"))
        return JSONResponse({"ok": True, "record": record, "progress": store.progress()})

    async def skip(request: Request):
        data = await body(request)
        store.skip(data["session"], data.get("item"), data.get("labeler"))
        return JSONResponse({"ok": True, "progress": store.progress()})

    async def undo(request: Request):
        data = await body(request)
        item = store.undo(data["session"], data.get("labeler"))
        return JSONResponse({"ok": item is not None, "item": describe(item), "progress": store.progress()})

    async def clip(request: Request):
        if clips is None:
            raise AnswerError(404, "this source has no clips")
        try:
            data, frames = clips.strip(int(request.path_params["segment"]))
        except (KeyError, ValueError, OSError):
            raise AnswerError(404, f"no clip {request.path_params['segment']!r} in this source") from None
        return Response(data, media_type="image/png", headers={"X-Frames": str(frames),
                                                               "Cache-Control": "max-age=3600"})

    routes = [Route("/", guarded(index)), Route("/api/next", guarded(next_item)),
              Route("/api/answer", guarded(answer), methods=["POST"]), Route("/api/skip", guarded(skip), methods=["POST"]),
              Route("/api/undo", guarded(undo), methods=["POST"]), Route("/api/clip/{segment:int}.png", guarded(clip))]

    async def not_found(request: Request, exc: Exception):
        return error(404, f"no such page: {request.url.path}")

    return Starlette(routes=routes, exception_handlers={404: not_found})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rlrun-label", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a segments .npz, a run directory (segments.npz, or a pbrl run with "
                                  "algo.labeler=human), a text-pairs JSONL or a rankings JSONL")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT}; 0 = any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--allow-remote", action="store_true",
                   help="needed to bind an address other than loopback; every request then needs a random token")
    p.add_argument("--out", help="answers file (default: labels.jsonl beside the segments, <run>/labelling/labels.jsonl "
                                 "for a pbrl run, <name>.human.jsonl beside a text file); answers in it are kept")
    p.add_argument("--pairs", type=int, help="segments: number of pairs to ask (default: every clip once, paired at "
                                             "random)")
    p.add_argument("--pairs-from", help="segments: ask about the pairs of this labels JSONL (e.g. a run's labels.jsonl)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pairing and the order responses are shown in")
    return p.parse_args(argv)


def _check_bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or ConfigError naming the problem."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"--host {host} --port {port} cannot be bound ({exc.strerror or exc}): expected a free port "
                          "(another one with --port, or --port 0 for any free port)") from None
    sock.listen(64)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    """Check everything, bind, print the URL, serve until interrupted."""
    try:
        import uvicorn  # noqa: F401
        import starlette  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"rlrun-label needs the label extra ({exc.name} is missing): pip install -e \".[label]\"") \
            from None
    if args.pairs is not None and args.pairs < 1:
        raise ConfigError(f"--pairs {args.pairs} is not allowed: expected an integer >= 1")
    remote = not _is_loopback(args.host)
    if remote and not args.allow_remote:
        raise ConfigError(f"--host {args.host} is not a loopback address: binding it exposes the page to the "
                          "network; add --allow-remote to do so (every request then needs a token)")
    source = open_source(args.source, args.pairs, args.pairs_from, args.seed)
    clips = Clips(source) if source.kind == "segments" else None  # refuses an env it cannot render
    sock = _check_bind(args.host, args.port)
    store = LabelStore(source, Path(args.out) if args.out else default_output(source))
    token = secrets.token_urlsafe(16) if remote else None
    app = build_app(store, token, clips)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    progress = store.progress()
    print(f"rlrun-label: {progress['queued']} questions to ask, {progress['answered']} answered already; answers go "
          f"to {store.output}", flush=True)
    print(f"rlrun-label: open {url}", flush=True)
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one line and exit status 2 for bad input."""
    args = parse_args(argv)
    try:
        return serve(args)
    except ConfigError as exc:
        print(f"rlrun-label: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
