"""A local web page for colorizing photos: upload, choose samples, temperature and seed, download.

Every colorization comes from ``Colorizer.colorize_photo``, the call ``pipelines/colorize.py``
makes; this file only adds the page. The server listens on localhost unless --host says otherwise,
caps uploads in megabytes and in pixels, and contacts nothing on the internet (no usage reports,
no share link, fonts served by the app itself). Its resources are bounded: one colorization runs at
a time and a few more may wait (beyond that a request is told the page is busy), previews never wait
for the model, and a session's files are removed once it has been idle for the session time limit,
when the tab closes, and when the server stops (Ctrl-C or SIGTERM). Needs the ``app`` extra:
pip install -e ".[app]".

Examples:
    python pipelines/app.py                                  # shipped model, http://127.0.0.1:7860
    python pipelines/app.py --model runs/mine/release --port 8080
    python pipelines/app.py --host 0.0.0.0 --max-megapixels 8  # reachable from other machines
"""

from __future__ import annotations

import argparse
import math
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from cinn.programs.cli import user_errors_exit
from PIL import Image

from cinn import DEFAULT_MODEL
from cinn.colorizer import Colorizer
from cinn.devices import resolve_device
from cinn.errors import UsageError
from cinn.images import ImageLoadError, load_rgb_and_alpha
from cinn.limits import PhotoLimits

if TYPE_CHECKING:
    import gradio

MAX_TEMPERATURE = 1.5
MAX_QUEUED_EVENTS = 64  # a last bound on requests Gradio holds before a handler runs (previews, a flood)
# Gradio caps a gallery at 55% of the window and scrolls inside it; the page scrolls instead.
CSS = "#gallery .grid-wrap.fixed-height { max-height: none; }"
BUSY = "⏳ The page is busy: {count} colorizations are running or waiting. Please try again in a minute."
EXPIRED = "This session has expired; press **Colorize** to start again."
BITS_PER_DIM_NOTE = (
    "bits/dim: each sample's negative log-likelihood under the model (of a density, so it can be "
    "negative); lower is more probable."
)


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_file_mb: int = 25  # uploads larger than this are refused before they reach the model
    max_megapixels: float = 16.0  # checked from the file header, before the photo is decoded
    max_samples: int = 16  # colorizations per click
    max_gallery: int = 64  # colorizations kept for one photo
    max_aspect_ratio: float = 10.0  # the model works at a fixed short side, so a sliver is a huge request
    max_waiting: int = 4  # colorization requests that may wait for the model; more are told the page is busy
    session_seconds: float = 1800.0  # a session idle this long is forgotten and its files removed
    max_sessions: int = 32  # sessions held in memory at once (each holds its decoded photo)

    @property
    def photo(self) -> PhotoLimits:
        """The limits every program shares (``cinn.limits``), at this page's values."""
        return PhotoLimits(self.max_megapixels, self.max_aspect_ratio, self.max_samples, "this page's limit", False)


@dataclass
class Session:
    """One browser tab's photo and the colorizations drawn for it so far (held in a ``gr.State``)."""

    photo: Image.Image
    filename: str  # as uploaded, for the status line
    name: str  # file-name safe, for the PNGs
    seed: int
    folder: Path
    generator_state: torch.Tensor  # so "More samples" continues the seeded sequence
    items: list[tuple[str, str]] = field(default_factory=list)  # (PNG path, caption)
    original_bits_per_dim: float | None = None


Gallery = list[tuple[str, str]]  # (image path, caption) pairs, as gr.Gallery takes them
Unchanged = dict  # gr.skip(): the output keeps what it shows
# gray input, gallery, status, state
PageUpdate = tuple[Image.Image | Unchanged | None, Gallery | Unchanged, str, Session | None]


def gradio_module() -> ModuleType:
    """Imports Gradio with its usage reports and version check switched off."""
    # Gradio reads this at import and when a page is built; without it the server calls home.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise UsageError('the web app needs Gradio: pip install -e ".[app]"') from None
    return gradio


class ColorizerApp:
    """The page's handlers around one ``Colorizer``; ``build`` lays them out as a Gradio page.

    Handlers never raise for a bad upload: they return a sentence for the status line, so the
    page shows it and the server keeps serving.
    """

    def __init__(self, model: Colorizer, limits: Limits | None = None, model_name: str = "model"):
        self.model = model
        self.limits = limits or Limits()
        self.model_name = model_name
        self.device = next(model.parameters()).device
        self._files = tempfile.TemporaryDirectory(prefix="cinn-app-")  # colorizations, removed on exit
        self.root = Path(self._files.name)
        self.model_turns = ModelTurns(self.limits.max_waiting)

    def read_photo(self, path: str) -> Image.Image:
        """The uploaded file as RGB (RGBA with its alpha); ImageLoadError with a reason otherwise."""
        rgb, alpha = load_rgb_and_alpha(path, limits=self.limits.photo)  # the size is checked before decoding
        if alpha is not None:
            rgb.putalpha(alpha)
        return rgb

    def preview(self, path: str | None, session: Session | None) -> PageUpdate:
        """On upload: the gray input, or the reason the file cannot be used; clears the gallery.

        Needs no model, so it never waits behind colorizations (``build`` gives it its own queue).
        """
        self.forget(session)
        self.sweep()
        if path is None:
            return None, [], "", None
        try:
            photo = self.read_photo(path)
        except ImageLoadError as error:
            return None, [], unreadable(path, error), None
        width, height = photo.size
        return gray(photo), [], f"**{markdown_escape(Path(path).name)}**, {width}×{height} pixels: ready.", None

    def colorize(
        self, path: str | None, num_samples: float, temperature: float, seed: float | None, session: Session | None
    ) -> PageUpdate:
        """Colorize button: a fresh gallery of ``num_samples`` colorizations of the uploaded photo."""
        self.sweep()
        with self.model_turns.turn() as admitted:
            if not admitted:  # the page keeps what it shows
                gr = gradio_module()
                return gr.skip(), gr.skip(), self.busy(), session
            self.forget(session)
            if path is None:
                return None, [], "Upload a photo first.", None
            try:
                photo = self.read_photo(path)
            except ImageLoadError as error:
                return None, [], unreadable(path, error), None
            seed = int(seed) if seed is not None else secrets.randbelow(2**31)
            generator = torch.Generator(self.device).manual_seed(seed)
            name = re.sub(r"[^\w.-]+", "_", Path(path).stem)[:60] or "photo"
            folder = Path(tempfile.mkdtemp(dir=self.root))
            session = Session(photo, Path(path).name, name, seed, folder, generator.get_state())
            return gray(photo), *self.draw(session, num_samples, temperature)

    def more(
        self, num_samples: float, temperature: float, session: Session | None
    ) -> tuple[Gallery, str, Session | None]:
        """More samples button: adds colorizations after the ones already shown."""
        self.sweep()
        if session is None:
            return [], "Upload a photo and press **Colorize** first.", None
        if not session.folder.is_dir():  # swept: idle for longer than the session time limit
            return [], EXPIRED, None
        with self.model_turns.turn() as admitted:
            if not admitted:
                return list(session.items), self.busy(), session
            return self.draw(session, num_samples, temperature)

    def draw(self, session: Session, num_samples: float, temperature: float) -> tuple[Gallery, str, Session]:
        """Samples up to ``num_samples`` more colorizations -> (gallery items, status, session).

        The caller holds the model's turn (``ModelTurns``).
        """
        room = self.limits.max_gallery - len(session.items)
        if room <= 0:
            full = f"The gallery holds at most {self.limits.max_gallery} colorizations; press **Colorize** to restart."
            return list(session.items), full, session
        count = max(1, min(int(num_samples), self.limits.max_samples, room))
        temperature = float(temperature)  # the API accepts any number, NaN included
        if not math.isfinite(temperature):
            temperature = self.model.config.temperature
        temperature = min(max(temperature, 0.0), MAX_TEMPERATURE)
        generator = torch.Generator(self.device)
        generator.set_state(session.generator_state)
        result = self.model.colorize_photo(session.photo, count, temperature, generator)
        session.generator_state = generator.get_state()
        session.original_bits_per_dim = result.original_bits_per_dim
        session.folder.mkdir(exist_ok=True)  # a sweep may have come between the caller's check and now
        for image, bits in zip(result.images, result.bits_per_dim, strict=True):
            index = len(session.items) + 1
            path = session.folder / f"{session.name}_color_{index:02d}.png"
            image.save(path)
            session.items.append((str(path), f"#{index} · {bits:.3f} bits/dim · T={temperature:g}"))
        return list(session.items), self.status(session), session

    def busy(self) -> str:
        return BUSY.format(count=self.model_turns.limit)

    def status(self, session: Session) -> str:
        width, height = session.photo.size
        count = len(session.items)
        text = f"**{markdown_escape(session.filename)}**, {width}×{height} pixels: "
        text += f"{count} colorization{'s' * (count != 1)}, seed {session.seed}."
        if session.original_bits_per_dim is not None:
            text += f" The photo's own colours: {session.original_bits_per_dim:.3f} bits/dim."
        return f"{text}\n\n{BITS_PER_DIM_NOTE}"

    def forget(self, session: Session | None) -> None:
        """Deletes a finished session's PNGs (Gradio has served its own copies by then)."""
        if session is not None:
            shutil.rmtree(session.folder, ignore_errors=True)

    def sweep(self) -> None:
        """Deletes the PNGs of sessions idle longer than the time limit.

        Gradio forgets such a session's state (``time_to_live``), but a session it evicts or one
        whose state was never stored (two clicks at once) calls no one: the folder's age decides.
        """
        cutoff = time.time() - self.limits.session_seconds
        for folder in self.root.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:  # another request swept it first
                pass

    def build(self) -> gradio.Blocks:
        gr = gradio_module()
        # Gradio's copies of uploads and colorizations live as long as a session may.
        age = max(1, round(self.limits.session_seconds))
        with gr.Blocks(title="cINN colorization", analytics_enabled=False, delete_cache=(min(600, age), age)) as page:
            gr.Markdown(
                "# Colorize a photo\nEach sample is a different plausible colorization drawn from a conditional "
                f"invertible network (model `{self.model_name}`). Colour photos are first reduced to their lightness."
            )
            state = gr.State(None, time_to_live=self.limits.session_seconds, delete_callback=self.forget)
            with gr.Row():
                with gr.Column(scale=2, min_width=280):
                    photo = gr.File(label="Photo", type="filepath", elem_id="photo", height=120)
                    grayscale = gr.Image(
                        label="Gray input", format="png", interactive=False, buttons=["fullscreen"], elem_id="gray"
                    )
                    num_samples = gr.Slider(
                        1, self.limits.max_samples, value=4, step=1, label="Samples", elem_id="samples"
                    )
                    temperature = gr.Slider(
                        0, MAX_TEMPERATURE, value=self.model.config.temperature, step=0.05, label="Temperature",
                        elem_id="temperature",
                        info="0 gives the single most likely colorization; higher is more varied",
                    )  # fmt: skip
                    seed = gr.Number(
                        0, label="Seed", precision=0, elem_id="seed", info="the same seed gives the same colorizations"
                    )
                    with gr.Row():
                        colorize = gr.Button("Colorize", variant="primary", elem_id="colorize")
                        more = gr.Button("More samples", elem_id="more")
                with gr.Column(scale=5):
                    status = gr.Markdown("Upload a photo to begin.", elem_id="status")
                    gallery = gr.Gallery(
                        label="Colorizations at full resolution (open one to download it)", format="png",
                        columns=3, object_fit="contain", buttons=["download", "fullscreen"],
                        elem_id="gallery",
                    )  # fmt: skip
            # Gradio starts the model's requests at once and they take turns in ``ModelTurns``, which
            # says "busy" to those beyond the waiting limit: Gradio's own queue would hold them without
            # bound and without a word. A preview needs no model and never waits behind one.
            options = {"concurrency_limit": None}
            photo.change(
                self.preview, [photo, state], [grayscale, gallery, status, state],
                concurrency_id="preview", concurrency_limit=2,
            )  # fmt: skip
            colorize.click(
                self.colorize, [photo, num_samples, temperature, seed, state], [grayscale, gallery, status, state],
                **options,
            )  # fmt: skip
            more.click(self.more, [num_samples, temperature, state], [gallery, status, state], **options)
        page.queue(max_size=MAX_QUEUED_EVENTS)
        return page

    def launch(self, host: str, port: int, block: bool = True) -> gradio.Blocks:
        """Serves the page on ``host:port``; with ``block=False`` returns once it is up."""
        page = self.build()
        try:
            page.launch(
                server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                max_file_size=f"{self.limits.max_file_mb}mb", allowed_paths=[str(self.root)], show_error=True,
                ssr_mode=False, mcp_server=False, pwa=False, footer_links=["api"], quiet=not block, css=CSS,
                state_session_capacity=self.limits.max_sessions,
            )  # fmt: skip
        except OSError as error:
            raise UsageError(f"cannot serve on {host}:{port}: {error}") from None
        return page

    def close(self) -> None:
        self._files.cleanup()


class ModelTurns:
    """The model serves one request at a time; at most ``max_waiting`` more may wait for their turn.

    A request beyond that is turned away at once rather than queued without bound (a queue of
    colorizations of large photos would keep a browser waiting for many minutes).
    """

    def __init__(self, max_waiting: int):
        self.limit = max_waiting + 1
        self.admitted = 0  # requests running or waiting
        self._counter = threading.Lock()
        self._model = threading.Lock()

    @contextmanager
    def turn(self) -> Iterator[bool]:
        """Yields True once it is this request's turn, or False at once if too many are waiting."""
        with self._counter:
            admitted = self.admitted < self.limit
            self.admitted += admitted
        if not admitted:
            yield False
            return
        try:
            with self._model:
                yield True
        finally:
            with self._counter:
                self.admitted -= 1


def gray(photo: Image.Image) -> Image.Image:
    """What the model sees, for display: the lightness (with alpha if the photo has it)."""
    return photo.convert("LA") if photo.mode == "RGBA" else photo.convert("L")


def markdown_escape(text: str) -> str:
    """A file name shown verbatim: ``my__photo*.png`` must not turn bold."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", text)


def unreadable(path: str, error: ImageLoadError) -> str:
    reason = markdown_escape(error.reason)
    return (
        f"⚠️ Cannot use **{markdown_escape(Path(path).name)}**: {reason}. Please upload a JPEG, PNG, WebP, TIFF or BMP."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model release directory (default: shipped)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--max-file-mb", type=int, default=Limits.max_file_mb, help="largest upload (default 25)")
    parser.add_argument(
        "--max-megapixels", type=float, default=Limits.max_megapixels, help="largest photo (default 16)"
    )
    parser.add_argument(
        "--session-minutes", type=float, default=Limits.session_seconds / 60,
        help="a session idle this long is forgotten and its files removed (default 30)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536 or args.max_file_mb < 1 or not args.max_megapixels > 0:
        parser.error("--port must be in 1-65535, --max-file-mb >= 1 and --max-megapixels > 0")
    if not 0 < args.session_minutes < math.inf:
        parser.error("--session-minutes must be a number > 0")
    return args


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gradio_module()  # a missing extra is reported before the model is loaded
    model = Colorizer.from_pretrained(args.model, device=resolve_device(args.device))
    limits = Limits(args.max_file_mb, args.max_megapixels, session_seconds=args.session_minutes * 60)
    app = ColorizerApp(model, limits, model_name=args.model.name)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: other machines can reach this page", file=sys.stderr)
    # SIGTERM (a service manager's stop) ends the server as Ctrl-C does, so the files are removed.
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        app.launch(args.host, args.port)  # once the page is up, Gradio catches the interrupt itself
    except KeyboardInterrupt:  # stopped while the page was starting
        pass
    finally:
        app.close()
        signal.signal(signal.SIGTERM, previous)
    return 0


def interrupt(signum: int, frame: object) -> None:
    """Signal handler: stop the main thread as Ctrl-C would (Gradio then closes its server)."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
