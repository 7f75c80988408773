"""The dashboard's static files (HTML, JS, CSS), served by the server at ``/``.

No build step: the browser loads ES modules from ``js/`` directly. ``STATIC_DIR`` is the
folder to mount; plotly.js is served separately from the installed ``plotly`` package.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent
INDEX_HTML = STATIC_DIR / "index.html"
