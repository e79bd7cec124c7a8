"""The dashboard's static files (CSS, the one script, the icon), served by the app itself.

Only the files present in `static/` when the app starts can be served: the name is looked up in
that fixed table, so no path from a request ever reaches the file system. Every asset is ours and
local (no CDN), so the dashboard works offline and under `default-src 'none'`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse, Response

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
               ".png": "image/png", ".ico": "image/x-icon"}
# Assets change only with a release; an hour of caching is plenty and safe.
CACHE_SECONDS = 3600

STATIC_FILES: dict[str, Path] = {p.name: p for p in STATIC_DIR.iterdir()
                                 if p.is_file() and p.suffix in MEDIA_TYPES} \
    if STATIC_DIR.is_dir() else {}


def static_response(name: str) -> Response:
    path = STATIC_FILES.get(name)
    if path is None:
        return Response("no such file", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix],
                        headers={"Cache-Control": f"public, max-age={CACHE_SECONDS}"})
