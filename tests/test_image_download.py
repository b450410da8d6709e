"""Tests for vixml_lib.images.download: the resumable URL downloader into the authors' layout.

Network tests only talk to a local http.server on 127.0.0.1 started by a fixture.
"""
import collections
import csv
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from image_data import encoded, gradient, mad, thumb, write_csv
from PIL import Image

from vixml_lib.errors import DataFormatError
from vixml_lib.images import download
from vixml_lib.images.download import DownloadReport, download_images
from vixml_lib.images.sources import BinImageSource

# ----------------------------------------------------------------------------- local HTTP server


class ImageServer:
    """Serves fixed responses by path and counts the requests per path."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hits = collections.Counter()
        self.images = {
            "/big.png": gradient(1000, 600, 4),
            "/tall.png": gradient(300, 900, 5),
            "/small.jpg": gradient(100, 80, 6),
            "/flaky.jpg": gradient(500, 500, 7),
            "/slow.jpg": gradient(50, 50, 8),
            "/dropped.png": gradient(20, 20, 9),
        }
        for k in range(10):
            self.images[f"/r{k}.png"] = gradient(64 + 16 * k, 48, 10 + k)
        rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 255))
        rgba.paste((0, 0, 0, 0), (0, 0, 20, 40))  # left half fully transparent
        self.images["/rgba.png"] = rgba
        self.bodies = {p: encoded(im, "JPEG" if p.endswith(".jpg") else "PNG") for p, im in self.images.items()}
        self.slow_seconds = 1.0

    def reset(self):
        with self.lock:
            self.hits.clear()

    def hit(self, path):
        with self.lock:
            self.hits[path] += 1
            return self.hits[path]

    def url(self, path):
        return f"{self.base}{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def _send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        srv: ImageServer = self.server.owner
        path = urlsplit(self.path).path
        n = srv.hit(path)
        try:
            if path == "/flaky.jpg" and n <= 2:
                return self._send(500, b"try again", "text/plain")
            if path == "/slow.jpg":
                time.sleep(srv.slow_seconds)
            if path == "/text.jpg":
                return self._send(200, b"this is not an image", "text/plain")
            body = srv.bodies.get(path)
            if body is None:
                return self._send(404, b"not found", "text/plain")
            ctype = "image/jpeg" if path.endswith(".jpg") else "image/png"
            return self._send(200, body, ctype)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass


@pytest.fixture(scope="module")
def server(request):
    srv = ImageServer()
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    httpd.owner = srv
    srv.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    request.addfinalizer(stop)
    srv.reset()
    return srv


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def read_failures(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_bin(path):
    return [line for line in Path(path).read_bytes().split(b"\n") if line]


# ----------------------------------------------------------------------------- download_images


def test_download_images(server, tmp_path):
    server.reset()
    local = tmp_path / "local.png"
    local_img = gradient(70, 90, 42)
    local_img.save(local)
    u = server.url
    rows = [
        (0, u("/big.png")), (0, u("/flaky.jpg")),
        (1, u("/missing.png")), (1, u("/small.jpg")),
        (2, u("/slow.jpg")),
        (3, u("/text.jpg")), (3, "ftp://example.invalid/a.jpg"),
        (5, local.as_uri()), (5, u("/tall.png")), (5, u("/rgba.png")), (5, u("/dropped.png")),
    ]
    table = write_csv(tmp_path / "urls.csv", ["item", "url"], rows)
    out = tmp_path / "out"
    rep = download_images(
        table, out, "trn", n_items=6, workers=4, timeout=0.5, retries=2, backoff=0.01, progress=False
    )
    assert isinstance(rep, DownloadReport)
    assert (rep.requested, rep.unique_urls, rep.downloaded, rep.failed, rep.reused, rep.dropped) == (10, 10, 6, 4, 0, 1)
    assert (rep.n_images, rep.n_items, rep.items_with_images) == (6, 6, 3)
    assert rep.bin_path == out / "trn_imgs_384_3.bin" and rep.map_path == out / "trn_imgs_384_3_map.npy"
    # only the final files remain: no journal, no temporary files
    assert sorted(p.name for p in out.iterdir()) == [
        "trn_download_failures.csv", "trn_imgs_384_3.bin", "trn_imgs_384_3_map.npy"
    ]

    # map: successful images in row order, left-packed; the .bin ordered by (item, row)
    m = np.load(rep.map_path, allow_pickle=False)
    assert m.dtype == np.int64
    assert m.tolist() == [[0, 1, -1], [2, -1, -1], [-1, -1, -1], [-1, -1, -1], [-1, -1, -1], [3, 4, 5]]
    src = BinImageSource(rep.bin_path, rep.map_path, n_items=6)
    assert len(src) == 6 == len(read_bin(rep.bin_path))
    expected = [server.images["/big.png"], server.images["/flaky.jpg"], server.images["/small.jpg"],
                local_img, server.images["/tall.png"]]
    for j, im in enumerate(expected):
        got = src.load(j)
        want = thumb(im)
        assert got.size == want.size and max(got.size) <= 384
        assert mad(got, want) < 4.0, j
    assert src.load(0).size == (384, 230)  # 1000x600 thumbnailed to fit 384x384
    assert src.load(4).size == (128, 384)  # 300x900
    assert src.load(2).size == (100, 80)  # small images are not enlarged
    rgba = np.asarray(src.load(5), dtype=float)
    assert rgba[:, :15].mean() > 240  # transparency composited onto white
    assert abs(rgba[:, 25:, 0].mean() - 255) < 10 and rgba[:, 25:, 1].mean() < 15

    # failures CSV, in (item, row) order
    fails = read_failures(rep.failures_path)
    assert [(f["item"], f["url"], f["attempts"]) for f in fails] == [
        ("1", u("/missing.png"), "1"),
        ("2", u("/slow.jpg"), "3"),
        ("3", u("/text.jpg"), "1"),
        ("3", "ftp://example.invalid/a.jpg", "0"),
    ]
    reasons = [f["reason"] for f in fails]
    assert reasons[0] == "http 404"
    assert reasons[1] == "timeout"
    assert reasons[2].startswith("not a readable image (20 bytes, content-type text/plain)")
    assert reasons[3] == "unsupported url scheme 'ftp'"

    # retries: 500 twice then success = 3 requests; 404 not retried; timeouts retried
    assert server.hits["/flaky.jpg"] == 3
    assert server.hits["/missing.png"] == 1
    assert server.hits["/slow.jpg"] == 3
    assert server.hits["/text.jpg"] == 1
    assert server.hits["/dropped.png"] == 0
    assert server.hits["/big.png"] == 1


def test_download_retries_exhausted(server, tmp_path):
    server.reset()
    table = write_csv(tmp_path / "u.csv", ["item", "url"], [(0, server.url("/flaky.jpg")), (1, "not a url")])
    rep = download_images(table, tmp_path, "tst", retries=1, backoff=0.01, timeout=5, progress=False)
    assert server.hits["/flaky.jpg"] == 2
    fails = read_failures(rep.failures_path)
    assert [(f["item"], f["reason"], f["attempts"]) for f in fails] == [
        ("0", "http 500", "2"), ("1", "not a url (no scheme)", "0")
    ]
    assert rep.n_images == 0 and read_bin(rep.bin_path) == []
    assert np.load(rep.map_path).tolist() == [[-1, -1, -1], [-1, -1, -1]]
    # an empty .bin with an all -1 map is a valid source
    assert len(BinImageSource(rep.bin_path, rep.map_path)) == 0


def test_download_bad_table(tmp_path):
    table = tmp_path / "u.csv"
    table.write_text("item,link\n0,http://x/a.jpg\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"u\.csv:1: missing column 'url'"):
        download_images(table, tmp_path, "trn", progress=False)
    table.write_text("item,url\n0,http://x/a.jpg\n-1,http://x/b.jpg\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"u\.csv:3: "):
        download_images(table, tmp_path, "trn", progress=False)
    assert not (tmp_path / "trn_imgs_384_3.bin").exists()


class _Interrupt(BaseException):
    """Stands for Ctrl-C / a killed job in the middle of a download."""


def test_download_resume_is_identical_and_does_not_refetch(server, tmp_path, monkeypatch):
    u = server.url
    rows = []
    for item in range(8):
        rows.append((item, u(f"/r{item}.png")))
    rows += [(1, u("/missing.png")), (6, u("/flaky.jpg")), (7, u("/r0.png")), (9, u("/r9.png"))]
    rows.sort(key=lambda r: r[0])  # stable: keeps the row order within an item
    table = write_csv(tmp_path / "urls.csv", ["item", "url"], rows)
    kw = dict(n_items=10, workers=1, timeout=5.0, retries=2, backoff=0.01, progress=False)

    # 1) interrupted run: the fetch of r5 raises (as Ctrl-C would)
    server.reset()
    real_fetch = download.fetch_one

    def interrupting_fetch(url, *a, **k):
        if url.endswith("/r5.png"):
            raise _Interrupt()
        return real_fetch(url, *a, **k)

    monkeypatch.setattr(download, "fetch_one", interrupting_fetch)
    out = tmp_path / "resumed"
    with pytest.raises(_Interrupt):
        download_images(table, out, "trn", **kw)
    monkeypatch.setattr(download, "fetch_one", real_fetch)
    partial = out / "trn_download.partial"
    assert partial.is_dir()
    assert not (out / "trn_imgs_384_3.bin").exists() and not (out / "trn_imgs_384_3_map.npy").exists()
    assert not (out / "trn_download_failures.csv").exists()
    journaled = {json.loads(line)["url"] for line in (partial / "journal.jsonl").read_text().splitlines()}
    first = {u(f"/r{i}.png") for i in range(5)} | {u("/missing.png")}
    assert first <= journaled and u("/r5.png") not in journaled
    # a torn last journal line (crash in mid-write) is ignored
    with open(partial / "journal.jsonl", "a") as f:
        f.write('{"url": "http://127.0.0.1/tor')

    # 2) resume: nothing journaled is fetched again
    server.reset()
    rep = download_images(table, out, "trn", **kw)
    assert rep.reused == len(journaled)
    for url in journaled:
        assert server.hits[urlsplit(url).path] == 0, url
    assert server.hits["/r5.png"] == 1
    assert rep.downloaded == 10 - sum(1 for x in journaled if "missing" not in x)
    assert not partial.exists()

    # 3) a fresh uninterrupted run gives byte-identical outputs
    server.reset()
    fresh = download_images(table, tmp_path / "fresh", "trn", **kw)
    assert (fresh.reused, fresh.downloaded, fresh.failed, fresh.n_images) == (0, 10, 1, 10)
    for name in ("trn_imgs_384_3.bin", "trn_imgs_384_3_map.npy", "trn_download_failures.csv"):
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    m = np.load(fresh.map_path)
    # .bin order: r0 r1 (missing fails) r2 r3 r4 r5 r6 flaky r7 r9; r0 is shared by items 0 and 7
    assert m[0].tolist() == [0, -1, -1] and m[7].tolist() == [8, 0, -1]
    assert m[1].tolist() == [1, -1, -1] and m[6].tolist() == [6, 7, -1]
    assert m[8].tolist() == [-1, -1, -1] and m[9].tolist() == [9, -1, -1]
    assert read_failures(fresh.failures_path)[0]["reason"] == "http 404"


def test_download_journal_with_other_settings_is_discarded(tmp_path):
    img = tmp_path / "a.png"
    gradient(500, 400).save(img)
    table = write_csv(tmp_path / "u.csv", ["item", "url"], [(0, img.as_uri())])
    r1 = download_images(table, tmp_path / "o", "trn", size=384, keep_journal=True, progress=False)
    assert (tmp_path / "o" / "trn_download.partial").is_dir()
    r2 = download_images(table, tmp_path / "o", "trn", size=384, progress=False)
    assert r2.reused == 1 and r2.downloaded == 0
    r3 = download_images(table, tmp_path / "o", "trn", size=128, progress=False)
    assert r3.reused == 0 and r3.downloaded == 1
    assert r3.bin_path.name == "trn_imgs_128_3.bin"
    assert BinImageSource(r3.bin_path, r3.map_path).load(0).size == (128, 102)
    assert r1.bin_path.read_bytes() != r3.bin_path.read_bytes()
