"""A resumable downloader: a table of image URLs -> the authors' ``.bin`` + map layout.

:func:`download_images` fetches a table of image URLs (columns ``item``, ``url``; read
by :mod:`vixml_lib.images.tables`) with bounded concurrency, retries and timeouts
(:mod:`vixml_lib.images.download_fetch`), thumbnails them to 384x384 and writes the
authors' layout (:mod:`vixml_lib.images.store`, :mod:`vixml_lib.images.maps`) plus a
failures CSV. Interrupted runs resume from a journal
(:mod:`vixml_lib.images.download_journal`) and the result is byte-identical to an
uninterrupted run.

The steps, each a function: :func:`_plan` (read the table, fix the ``.bin`` order and
the output paths), :func:`_still_to_fetch` (what the journal of an interrupted run already
has), :func:`_fetch_missing` (fetch the rest on a thread pool, journaling each result),
:func:`_assemble` (map and failures from the records), :func:`_write_outputs` (the
``.bin``, the map and the failures CSV, atomically) and :func:`_report`.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from ..io_utils import atomic_open
from .download_fetch import FetchResult, fetch_one
from .download_journal import DownloadJournal, JournalRecord
from .maps import save_image_map
from .store import bin_paths, write_image_bin
from .tables import read_image_table

log = logging.getLogger(__name__)

__all__ = ["DownloadReport", "download_images"]

_JOURNAL_FORMAT = 1


@dataclasses.dataclass
class DownloadReport:
    """Outcome of :func:`download_images`.

    Row counts are over ``(item, url)`` rows kept (after ``max_images``); URL counts over
    distinct URLs (a URL shared by several rows is fetched once and stored once).
    """

    requested: int  # (item, url) rows requested (after dropping rows beyond max_images)
    unique_urls: int  # distinct URLs among them
    downloaded: int  # URLs fetched successfully in this run
    failed: int  # (item, url) rows that failed (rows of the failures CSV), this run or journal
    reused: int  # URLs whose result (image or failure) came from the journal of an earlier run
    dropped: int  # table rows beyond max_images, ignored
    n_images: int  # lines of the .bin
    n_items: int
    items_with_images: int
    seconds: float
    bin_path: Path
    map_path: Path
    failures_path: Path

    def __str__(self) -> str:
        return (
            f"{self.n_images} images for {self.items_with_images}/{self.n_items} items "
            f"({self.requested} requested, {self.downloaded} downloaded, {self.reused} reused, "
            f"{self.failed} failed, {self.dropped} dropped) in {self.seconds:.1f}s -> {self.bin_path}"
        )


@dataclasses.dataclass
class _Plan:
    """What to download and where to write it."""

    values: list[list[str]]  # per item, its URLs in row order (at most max_images)
    n_items: int
    n_rows: int  # (item, url) rows kept
    n_dropped: int  # rows beyond max_images
    urls: list[str]  # distinct URLs in (item, row) order of first occurrence: the .bin order
    max_images: int
    bin_path: Path
    map_path: Path
    failures_path: Path


def _plan(url_table: Path, out_dir: Path, split: str, n_items: int | None, max_images: int, size: int) -> _Plan:
    """Read the URL table and fix the order of the ``.bin`` and the output paths."""
    values, n, n_dropped = read_image_table(url_table, "url", max_images, n_items)
    order: dict[str, int] = {}
    n_rows = 0
    for lst in values:
        for url in lst:
            n_rows += 1
            if url not in order:
                order[url] = len(order)
    bin_path, map_path = bin_paths(out_dir, split, size, max_images)
    return _Plan(values, n, n_rows, n_dropped, list(order), max_images, bin_path, map_path,
                 out_dir / f"{split}_download_failures.csv")


def _still_to_fetch(done: dict[str, JournalRecord], urls: list[str],
                    retry_failed: bool) -> tuple[dict[str, JournalRecord], list[str]]:
    """The journal's records to reuse (failures dropped when ``retry_failed``) and the URLs to fetch."""
    if retry_failed:
        done = {u: r for u, r in done.items() if r.ok}
    return done, [u for u in urls if u not in done]


def _fetch_all(urls: list[str], fetch: Callable[[str], FetchResult], workers: int,
               record: Callable[[str, FetchResult], None]) -> None:
    """``fetch`` every URL on ``workers`` threads (at most ``2 * workers`` in flight) and hand
    each result to ``record`` in this thread as it comes.

    Interrupted (Ctrl-C, or any exception): queued work is cancelled and the fetches
    that had finished are still recorded, so a rerun need not fetch them again.
    """
    ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vixml-download")
    inflight: dict[Future, str] = {}
    it = iter(urls)

    def fill():
        while len(inflight) < 2 * workers:
            url = next(it, None)
            if url is None:
                return
            inflight[ex.submit(fetch, url)] = url

    try:
        fill()
        while inflight:
            finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in finished:
                record(inflight[fut], fut.result())
                del inflight[fut]
            fill()
    except BaseException:
        for fut in inflight:
            fut.cancel()
        ex.shutdown(wait=True, cancel_futures=True)
        for fut, url in inflight.items():
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                try:
                    record(url, fut.result())
                except Exception:  # pragma: no cover - best effort
                    pass
        raise
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _fetch_missing(todo: list[str], done: dict[str, JournalRecord], journal: DownloadJournal,
                   fetch: Callable[[str], FetchResult], workers: int, bar) -> int:
    """Fetch the URLs of ``todo``, journal each result into ``done``; returns how many succeeded."""
    downloaded = 0

    def record(url: str, res: FetchResult) -> None:
        nonlocal downloaded
        done[url] = journal.add(url, res)
        downloaded += int(res.ok)
        if bar is not None:
            bar.update(1)

    try:
        _fetch_all(todo, fetch, workers, record)
    finally:
        if bar is not None:
            bar.close()
    return downloaded


def _assemble(plan: _Plan, done: dict[str, JournalRecord]) -> tuple[list[str], np.ndarray, list[tuple]]:
    """``(ok_urls, image_map, failures)``: the ``.bin``'s URLs in order, the map (n_items,
    max_images) of their lines (an item's successful images in row order, left-packed, then
    -1), and ``(item, url, reason, attempts)`` per failed row in (item, row) order."""
    line_of: dict[str, int] = {}
    ok_urls = []
    for url in plan.urls:
        if done[url].ok:
            line_of[url] = len(ok_urls)
            ok_urls.append(url)
    image_map = np.full((plan.n_items, plan.max_images), -1, dtype=np.int64)
    failures = []
    for i, lst in enumerate(plan.values):
        k = 0
        for url in lst:
            rec = done[url]
            if rec.ok:
                image_map[i, k] = line_of[url]
                k += 1
            else:
                failures.append((i, url, rec.reason, rec.attempts))
    return ok_urls, image_map, failures


def _write_outputs(plan: _Plan, journal: DownloadJournal, done: dict[str, JournalRecord], ok_urls: list[str],
                   image_map: np.ndarray, failures: list[tuple]) -> int:
    """Write the ``.bin`` (lines copied from the journal), the map and the failures CSV,
    each atomically. Returns the number of images."""
    journal.start_reading()

    def lines():
        for url in ok_urls:
            rec = done[url]
            data = journal.read_line(rec)
            if len(data) != rec.length:
                raise RuntimeError(f"{journal.data_path}: journal data for {url} is truncated; "
                                   f"delete {journal.folder} and rerun")
            yield data

    n_images = write_image_bin(plan.bin_path, lines())
    save_image_map(plan.map_path, image_map)
    with atomic_open(plan.failures_path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["item", "url", "reason", "attempts"])
        w.writerows(failures)
    return n_images


def _progress_bar(progress: bool, total: int, initial: int, split: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc=f"download {split}", dynamic_ncols=True)


def _report(plan: _Plan, downloaded: int, reused: int, n_failed: int, n_images: int, image_map: np.ndarray,
            t0: float) -> DownloadReport:
    n = plan.n_items
    return DownloadReport(
        requested=plan.n_rows,
        unique_urls=len(plan.urls),
        downloaded=downloaded,
        failed=n_failed,
        reused=reused,
        dropped=plan.n_dropped,
        n_images=n_images,
        n_items=n,
        items_with_images=int((image_map[:, 0] >= 0).sum()) if n else 0,
        seconds=time.monotonic() - t0,
        bin_path=plan.bin_path,
        map_path=plan.map_path,
        failures_path=plan.failures_path,
    )


def download_images(
    url_table: str | Path,
    out_dir: str | Path,
    split: str,
    n_items: int | None = None,
    max_images: int = 3,
    size: int = 384,
    workers: int = 8,
    timeout: float = 10.0,
    retries: int = 2,
    backoff: float = 0.5,
    progress: bool = True,
    quality: int = 90,
    retry_failed: bool = False,
    keep_journal: bool = False,
) -> DownloadReport:
    """Download the images of a URL table into the authors' layout.

    ``url_table``: CSV/parquet with columns ``item``, ``url`` (several rows per item,
    order kept, at most ``max_images`` per item). Only ``http``, ``https`` and ``file``
    URLs are fetched; others are recorded failures. Each distinct URL is fetched once
    by a pool of ``workers`` threads (each request has ``timeout`` seconds; timeouts,
    5xx/408/429 answers and connection errors are retried up to ``retries`` times
    with exponential ``backoff`` (0.5 s, 1 s, 2 s, ...); 404 and other 4xx are not).
    Images are thumbnailed to fit within ``size`` x ``size`` (RGB, transparency on
    white, EXIF orientation applied) and stored as base64 JPEG (``quality``).

    Writes, atomically at the end, into ``out_dir``:

    - ``<split>_imgs_<size>_<max_images>.bin`` (``<split>_imgs_384_3.bin`` by default):
      one image a line, ordered by each URL's first ``(item, row)`` occurrence, so the
      order never depends on completion times;
    - ``..._map.npy``: int64 ``(n_items, max_images)``; an item's successful images in
      row order, left-packed, then ``-1`` (failed images are simply absent);
    - ``<split>_download_failures.csv``: ``item,url,reason,attempts`` per failed row.

    Resumable: finished URLs (images and failures) are journaled in
    ``<split>_download.partial/``; rerunning after an interruption fetches only the
    rest (journaled failures are reused unless ``retry_failed``) and produces
    byte-identical outputs. The journal is removed on success unless ``keep_journal``.
    """
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    plan = _plan(Path(url_table), out_dir, split, n_items, max_images, size)
    out_dir.mkdir(parents=True, exist_ok=True)

    journal = DownloadJournal(out_dir / f"{split}_download.partial",
                              {"format": _JOURNAL_FORMAT, "size": int(size), "quality": int(quality)})
    done = journal.open()
    try:
        done, todo = _still_to_fetch(done, plan.urls, retry_failed)
        reused = len(plan.urls) - len(todo)
        if reused:
            log.info("%s: resuming; %d of %d URL(s) already done", journal.folder, reused, len(plan.urls))
        opener = urllib.request.build_opener()

        def fetch(url: str) -> FetchResult:
            return fetch_one(url, opener, timeout, retries, backoff, size, quality)

        bar = _progress_bar(progress, len(plan.urls), reused, split)
        downloaded = _fetch_missing(todo, done, journal, fetch, workers, bar)
        ok_urls, image_map, failures = _assemble(plan, done)
        n_images = _write_outputs(plan, journal, done, ok_urls, image_map, failures)
    finally:
        journal.close()
    if not keep_journal:
        shutil.rmtree(journal.folder, ignore_errors=True)

    report = _report(plan, downloaded, reused, len(failures), n_images, image_map, t0)
    if failures:
        log.warning("%d of %d image(s) failed; see %s", len(failures), plan.n_rows, plan.failures_path)
    log.info("%s", report)
    return report
