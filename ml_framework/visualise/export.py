"""Writing figures: HTML that opens offline (one shared local plotly.min.js), PNG through kaleido."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ml_framework.errors import ConfigError, unknown_key_message

if TYPE_CHECKING:
    import plotly.graph_objects as go

FORMATS: tuple[str, ...] = ("html", "png")
PLOTLY_JS = "plotly.min.js"
PNG_SIZE = (1200, 700)
BROWSER_NAMES: tuple[str, ...] = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
)
INSTALL_HINT = "install Chromium (Debian/Ubuntu: apt-get install chromium) or run `kaleido_get_chrome`"


def parse_formats(values: Sequence[str]) -> list[str]:
    """`["html,png"]` or `["html", "png"]` -> ['html', 'png']; HTML is always written."""
    out = ["html"]
    for v in values:
        for f in filter(None, (s.strip().lower() for s in v.split(","))):
            if f not in FORMATS:
                raise ConfigError(unknown_key_message(f, FORMATS, "--format"))
            if f not in out:
                out.append(f)
    return out


@dataclass(frozen=True)
class Browser:
    path: str | None
    reason: str  # where it was found, or why none was


def find_browser() -> Browser:
    """The Chrome/Chromium kaleido will drive: $BROWSER_PATH, kaleido's own lookup, then PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).is_file():
        return Browser(env, "BROWSER_PATH")
    try:
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)
        if found:
            return Browser(found, "found by kaleido")
    except Exception:  # an older choreographer layout: fall back to PATH
        pass
    for name in BROWSER_NAMES:
        if path := shutil.which(name):
            return Browser(path, "PATH")
    return Browser(None, f"no Chrome or Chromium found ({INSTALL_HINT})")


def ensure_plotly_js(out_dir: Path) -> Path:
    """One local plotly.min.js beside the HTML files, rewritten if it is from another plotly version."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    path = out_dir / PLOTLY_JS
    if not path.is_file() or path.stat().st_size != len(js.encode()):
        path.write_text(js, encoding="utf-8")
    return path


def write_html(figures: Mapping[str, go.Figure], out_dir: Path) -> list[Path]:
    """`<name>.html` per figure, each loading the shared `plotly.min.js` (no CDN, opens offline)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if figures:
        ensure_plotly_js(out_dir)
    paths = []
    for name, fig in figures.items():
        path = out_dir / f"{name}.html"
        fig.write_html(path, include_plotlyjs="directory", full_html=True, config={"responsive": True})
        paths.append(path)
    return paths


def write_png(figures: Mapping[str, go.Figure], out_dir: Path) -> list[Path]:
    """All figures in one kaleido session (one browser start for the lot)."""
    import plotly.io as pio

    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(figures)
    paths = [out_dir / f"{n}.png" for n in names]
    heights = [int(figures[n].layout.height or PNG_SIZE[1]) for n in names]
    pio.write_images([figures[n] for n in names], paths, width=PNG_SIZE[0], height=heights)
    return paths


@dataclass
class ExportResult:
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. why PNG was skipped


def export_figures(
    figures: Mapping[str, go.Figure], out_dir: Path, formats: Sequence[str], browser: Browser | None
) -> ExportResult:
    """HTML always; PNG when asked for and a browser is there, else one note saying why not."""
    result = ExportResult(written=write_html(figures, out_dir))
    if "png" not in formats or not figures:
        return result
    if browser is None or browser.path is None:
        why = browser.reason if browser else "no browser given"
        result.notes.append(f"PNG skipped: {why}; HTML written.")
        return result
    try:
        result.written += write_png(figures, out_dir)
    except Exception as e:  # kaleido/browser failures are environmental: keep the HTML, say why
        result.notes.append(f"PNG skipped: kaleido failed with {browser.path}: {type(e).__name__}: {e}")
    return result
