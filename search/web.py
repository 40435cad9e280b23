"""The search page: a Starlette app over one :class:`search.VideoIndex`, served by uvicorn.

Routes::

    GET /                          the page (plain HTML + JS, no build step)
    GET /api/search?q=TEXT&k=N     {"query", "results": [{rank, score, entry, video_id, path, start, end, ...}]}
    GET /api/info                  the index's description and size
    GET /thumb/{entry}             the entry's JPEG thumbnail
    GET /video/{entry}             the entry's video file, with HTTP range requests (seeking)
    GET /files/{root}/{path}       a file under indexed root number ``root`` (range requests too)

Files are served only from inside the indexed roots: a path that leaves them (``..``, an absolute path, a
symlink pointing outside) is refused with 403; unknown entries are 404. Bind to 127.0.0.1 unless you mean
to share your videos with the network.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from search.encode import EmptyQueryError
from search.index import BadKError, VideoIndex, check_k, resolve_inside
from shared.paths import UnsafeVideoIdError, check_video_id

logger = logging.getLogger(__name__)

MAX_K = 200

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DiscoVLA video search</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; margin: 0; background: #f4f4f6; color: #222; }
 header { padding: 14px 20px; background: #1f2937; color: #fff; display: flex; gap: 12px; align-items: center; }
 header h1 { font-size: 18px; margin: 0 12px 0 0; font-weight: 600; }
 #q { flex: 1; font-size: 16px; padding: 8px 10px; border-radius: 6px; border: 0; }
 button { font-size: 15px; padding: 8px 14px; border-radius: 6px; border: 0; background: #3b82f6; color: #fff; }
 #info { font-size: 12px; color: #cbd5e1; }
 main { display: flex; gap: 16px; padding: 16px 20px; align-items: flex-start; }
 #results { flex: 1; display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
 .result { background: #fff; border-radius: 8px; padding: 8px; cursor: pointer; box-shadow: 0 1px 3px #0002; }
 .result:hover, .result.active { outline: 2px solid #3b82f6; }
 .result img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 4px; background: #ddd; }
 .meta { font-size: 12px; margin-top: 6px; display: flex; justify-content: space-between; }
 .name { font-size: 12px; color: #555; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
 .score { font-weight: 600; }
 aside { width: 420px; position: sticky; top: 16px; }
 video { width: 100%; background: #000; border-radius: 8px; }
 #now { font-size: 13px; color: #444; margin-top: 6px; word-break: break-all; }
 #status { padding: 0 20px; font-size: 13px; color: #666; }
</style></head>
<body>
<header><h1>Video search</h1>
 <form id="form" style="display:flex; flex:1; gap:8px"><input id="q" name="q" autocomplete="off" autofocus
   placeholder="describe the clip, e.g. a red circle turns blue"><button type="submit">Search</button></form>
 <span id="info"></span></header>
<div id="status"></div>
<main><div id="results"></div>
 <aside><video id="player" controls muted playsinline></video><div id="now">click a result to play it</div></aside>
</main>
<script>
const $ = (id) => document.getElementById(id);
const fmt = (s) => { s = Math.max(0, s || 0); const m = Math.floor(s / 60);
  return m + ":" + String(Math.floor(s % 60)).padStart(2, "0"); };
const windowText = (r) => r.start === null ? "whole video" : fmt(r.start) + "–" + fmt(r.end);
let pendingStart = 0;
$("player").addEventListener("loadedmetadata", () => { $("player").currentTime = pendingStart; });
function play(r, card) {
  document.querySelectorAll(".result.active").forEach((c) => c.classList.remove("active"));
  card.classList.add("active");
  pendingStart = r.start === null ? 0 : r.start;
  const player = $("player");
  const frag = r.start === null ? "" : "#t=" + r.start + "," + r.end;
  player.src = r.video_url + frag;
  player.dataset.entry = r.entry;
  player.play().catch(() => {});
  $("now").textContent = r.video_id + " · " + windowText(r) + " · score " + r.score.toFixed(3);
}
async function search(q) {
  $("status").textContent = "searching…";
  const res = await fetch("/api/search?k=24&q=" + encodeURIComponent(q));
  const body = await res.json();
  if (!res.ok) { $("status").textContent = body.error; $("results").innerHTML = ""; return; }
  $("status").textContent = body.results.length + " results for “" + body.query + "” in " + body.ms.toFixed(0) + " ms";
  const grid = $("results"); grid.innerHTML = "";
  for (const r of body.results) {
    const card = document.createElement("div"); card.className = "result"; card.dataset.entry = r.entry;
    const img = document.createElement("img"); img.src = r.thumb_url; img.alt = r.video_id;
    const meta = document.createElement("div"); meta.className = "meta";
    const score = document.createElement("span"); score.className = "score"; score.textContent = r.score.toFixed(3);
    const win = document.createElement("span"); win.className = "window"; win.textContent = windowText(r);
    meta.append(score, win);
    const name = document.createElement("div"); name.className = "name"; name.textContent = r.video_id; name.title = r.path;
    card.append(img, meta, name); card.addEventListener("click", () => play(r, card)); grid.append(card);
  }
}
$("form").addEventListener("submit", (e) => { e.preventDefault(); search($("q").value); });
fetch("/api/info").then((r) => r.json()).then((i) => { $("info").textContent = i.entries + " clips indexed"; });
</script></body></html>
"""


def _media(path: str) -> FileResponse:
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return FileResponse(path, media_type=kind)


class _Routes:
    """The page's request handlers over one index; one model forward at a time."""

    def __init__(self, index: VideoIndex):
        self.index = index
        self.lock = asyncio.Lock()

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def info(self, request: Request) -> Response:
        return JSONResponse({"entries": len(self.index), "description": self.index.describe()})

    async def search(self, request: Request) -> Response:
        import time

        query = request.query_params.get("q", "")
        text = request.query_params.get("k", "10")
        try:
            k = min(check_k(int(text) if text.strip().lstrip("+-").isdigit() else text), MAX_K)
        except BadKError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        started = time.perf_counter()
        try:
            async with self.lock:
                results = await asyncio.to_thread(self.index.search, query, k)
        except EmptyQueryError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        body = [
            {**r.to_json(), "thumb_url": f"/thumb/{r.entry}", "video_url": f"/video/{r.entry}"}
            for r in results
        ]
        return JSONResponse({"query": query, "results": body, "ms": (time.perf_counter() - started) * 1e3})

    def _entry(self, request: Request) -> int | None:
        try:
            row = int(request.path_params["entry"])
        except ValueError:
            return None
        return row if 0 <= row < len(self.index) else None

    async def thumb(self, request: Request) -> Response:
        row = self._entry(request)
        if row is None:
            return Response("no such entry", status_code=404)
        return Response(
            self.index.thumbnail(row), media_type="image/jpeg", headers={"cache-control": "max-age=3600"}
        )

    async def video(self, request: Request) -> Response:
        row = self._entry(request)
        if row is None:
            return Response("no such entry", status_code=404)
        try:
            path = self.index.video_file(row)
        except PermissionError as err:
            return Response(str(err), status_code=403)
        if not path.is_file():
            return Response("the video file is gone; re-run pipelines.index", status_code=404)
        return _media(str(path))

    async def files(self, request: Request) -> Response:
        number, roots = request.path_params["root"], self.index.roots
        if not (number.isascii() and number.isdigit() and int(number) < len(roots)):
            return Response("no such root", status_code=404)  # "-1" is not the last root
        root = roots[int(number)]
        try:
            path = resolve_inside([root], os.path.join(root, check_video_id(request.path_params["path"])))
        except (UnsafeVideoIdError, PermissionError) as err:
            return Response(str(err), status_code=403)
        if not path.is_file():
            return Response("not found", status_code=404)
        return _media(str(path))


def create_app(index: VideoIndex) -> Starlette:
    """The app serving ``index`` (its query encoder is loaded before the first request)."""
    routes = _Routes(index)
    return Starlette(
        routes=[
            Route("/", routes.page),
            Route("/api/info", routes.info),
            Route("/api/search", routes.search),
            Route("/thumb/{entry}", routes.thumb),
            Route("/video/{entry}", routes.video),
            Route("/files/{root}/{path:path}", routes.files),
        ]
    )


def serve(index: VideoIndex, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load the query encoder, then serve the page until interrupted."""
    import uvicorn

    index.encoder  # noqa: B018  (load the model before the first request, and refuse a mismatch now)
    print(
        f"serving {index.directory} ({len(index)} clips) on http://{host}:{port}/  (Ctrl-C to stop)",
        flush=True,
    )
    uvicorn.run(create_app(index), host=host, port=port, log_level="warning")
