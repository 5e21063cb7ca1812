"""Getting a source video onto local disk: a local file as is, an fsspec URL copied to a temporary file, or yt-dlp.

yt-dlp is optional (``pip install yt-dlp``) and imported only when a download
is needed; the job checks it is installed before any work starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipelines.hdvila.config import VIDEO_EXTENSIONS, SourceConfig
from pipelines.hdvila.probe import ClipError


class VideoFetcher:
    """Yields a local path for a planned row's video (see :meth:`local_path`)."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.download_dir = config.download_dir or config.videos

    @contextmanager
    def local_path(self, video_id: str, source: str | None, url: str) -> Iterator[str]:
        """A readable local file for the video; temporary copies are deleted on exit."""
        if source is None:
            if not self.config.download:
                raise ClipError("missing_video", f"no file for {video_id} and downloads are off")
            yield self._download(video_id, url)
            return
        if "://" not in source or source.startswith("file://"):
            path = source.removeprefix("file://")
            if not os.path.exists(path):
                raise ClipError("missing_video", f"{path} disappeared after the videos folder was listed")
            yield path
            return
        with self._copy(source) as path:
            yield path

    @contextmanager
    def _copy(self, url: str) -> Iterator[str]:
        import fsspec

        suffix = Path(url.split("?")[0]).suffix
        handle, path = tempfile.mkstemp(suffix=suffix, prefix="hdvila-")
        os.close(handle)
        try:
            try:
                with fsspec.open(url, "rb") as remote, open(path, "wb") as local:
                    shutil.copyfileobj(remote, local, length=8 << 20)
            except (OSError, ValueError) as error:
                raise ClipError("missing_video", f"cannot read {url}: {error}") from error
            yield path
        finally:
            os.unlink(path)

    def _download(self, video_id: str, url: str) -> str:
        try:
            import yt_dlp
        except ImportError as error:
            raise ClipError("download_failed", "yt-dlp is not installed: pip install yt-dlp") from error
        if not url:
            raise ClipError("download_failed", f"no url for {video_id}")
        target = Path(self.download_dir)
        target.mkdir(parents=True, exist_ok=True)
        partial = target / f".{video_id}.part-{os.getpid()}"
        options = {
            "format": self.config.download_format,
            "outtmpl": str(partial) + ".%(ext)s",
            "quiet": True,
            "noprogress": True,
            "noplaylist": True,
        }
        try:
            with yt_dlp.YoutubeDL(options) as downloader:
                downloader.download([url])
        except Exception as error:  # noqa: BLE001 - yt-dlp raises many types (DownloadError, network errors)
            raise ClipError("download_failed", f"yt-dlp failed for {url}: {error}") from error
        done = [p for p in target.glob(f"{partial.name}.*") if p.suffix.lower() in VIDEO_EXTENSIONS]
        if not done:
            raise ClipError("download_failed", f"yt-dlp produced no video file for {url}")
        final = target / f"{video_id}{done[0].suffix.lower()}"
        os.replace(done[0], final)  # only a finished download gets the name the video index looks for
        return str(final)
