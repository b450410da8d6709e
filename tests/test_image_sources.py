"""Tests for vixml_lib.image_sources: bin/folder sources and the resumable downloader.

Network tests only talk to a local http.server on 127.0.0.1 started by a fixture.
"""
import collections
import csv
import io
import json
import logging
import os
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from vixml_lib import image_sources
from vixml_lib.errors import DataFormatError
from vixml_lib.image_sources import (
    BinImageSource,
    DownloadReport,
    FolderImageSource,
    ImageSource,
    bin_source_for_split,
    download_images,
    open_image_source,
)
from vixml_lib.images import encode_image_line, write_image_bin


# ----------------------------------------------------------------------------- helpers


def gradient(w, h, seed=0):
    """A smooth RGB image (JPEG keeps it close), different for each seed."""
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = np.array([(37 * seed) % 200 + 20, (91 * seed) % 200 + 20, (53 * seed) % 200 + 20], dtype=float)
    arr = base * 0.6 + 80 * x + 60 * y * np.array([1.0, -0.5, 0.3])
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encoded(img, fmt):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def mad(a, b):
    """Mean absolute pixel difference of two same-size images."""
    assert a.size == b.size, (a.size, b.size)
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b.convert("RGB"), dtype=float)).mean())


def thumb(img, size=384):
    t = img.convert("RGB").copy()
    t.thumbnail((size, size))
    return t


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def make_bin(tmp_path, n=3, map_rows=None, split="trn"):
    imgs = [gradient(40 + 10 * i, 30 + 5 * i, seed=i) for i in range(n)]
    bin_path = tmp_path / f"{split}_imgs_384_3.bin"
    map_path = tmp_path / f"{split}_imgs_384_3_map.npy"
    write_image_bin(bin_path, [encode_image_line(im, quality=95) for im in imgs])
    if map_rows is None:
        map_rows = [[0, 1, -1], [-1, -1, -1], [2, -1, -1]]
    np.save(map_path, np.asarray(map_rows, dtype=np.int64))
    return imgs, bin_path, map_path


# ----------------------------------------------------------------------------- BinImageSource


def test_bin_source_round_trip(tmp_path):
    imgs, bin_path, map_path = make_bin(tmp_path)
    src = BinImageSource(bin_path, map_path)
    assert isinstance(src, ImageSource)
    assert len(src) == 3 and src.n_items == 3
    assert src.image_map.dtype == np.int64 and src.image_map.tolist() == [[0, 1, -1], [-1, -1, -1], [2, -1, -1]]
    for j, im in enumerate(imgs):
        out = src.load(j)
        assert out.mode == "RGB" and out.size == im.size
        assert mad(out, im) < 3.0
    with pytest.raises(IndexError):
        src.load(-1)
    with pytest.raises(IndexError):
        src.load(3)
    # convenience constructors
    assert len(bin_source_for_split(tmp_path, "trn")) == 3
    s2 = open_image_source(tmp_path, "trn")
    assert isinstance(s2, BinImageSource) and s2.fingerprint() == src.fingerprint()
    with pytest.raises(FileNotFoundError, match="tst_imgs_384_3.bin"):
        bin_source_for_split(tmp_path, "tst")
    with pytest.raises(ValueError, match="unknown image source kind"):
        open_image_source(tmp_path, "trn", kind="zip")


def test_bin_source_map_past_end_fails_at_construction(tmp_path):
    _, bin_path, map_path = make_bin(tmp_path, n=3, map_rows=[[0, 1, -1], [3, -1, -1]])
    with pytest.raises(DataFormatError) as ei:
        BinImageSource(bin_path, map_path)
    msg = str(ei.value)
    assert msg.startswith(str(map_path)) and "3" in msg and "the .bin has 3 images" in msg
    # wrong number of items is caught too
    _, bin_path, map_path = make_bin(tmp_path, n=3)
    with pytest.raises(DataFormatError, match="3 rows but there are 5 items"):
        BinImageSource(bin_path, map_path, n_items=5)


def test_bin_source_corrupt_line_raises_on_load(tmp_path):
    bin_path = tmp_path / "x.bin"
    map_path = tmp_path / "x_map.npy"
    write_image_bin(bin_path, [encode_image_line(gradient(20, 20)), b"bm90IGFuIGltYWdl"])  # "not an image"
    np.save(map_path, np.array([[0, 1]], dtype=np.int64))
    src = BinImageSource(bin_path, map_path)
    src.load(0)
    with pytest.raises(DataFormatError, match=r"x\.bin:2:"):
        src.load(1)


def test_bin_source_pickles(tmp_path):
    imgs, bin_path, map_path = make_bin(tmp_path)
    src = BinImageSource(bin_path, map_path)
    src.load(0)  # opens the file handle; pickling must still work
    fp = src.fingerprint()
    clone = pickle.loads(pickle.dumps(src))
    assert len(clone) == 3 and np.array_equal(clone.image_map, src.image_map)
    assert mad(clone.load(2), imgs[2]) < 3.0
    assert clone.fingerprint() == fp


def test_bin_source_fingerprint(tmp_path):
    _, bin_path, map_path = make_bin(tmp_path)
    src = BinImageSource(bin_path, map_path)
    fp = src.fingerprint()
    assert len(fp) == 64 and fp == src.fingerprint()
    assert BinImageSource(bin_path, map_path).fingerprint() == fp  # deterministic
    # change one byte of the .bin (a base64 character for another): new fingerprint
    data = bytearray(bin_path.read_bytes())
    k = 40
    data[k] = ord("A") if data[k] != ord("A") else ord("B")
    bin_path.write_bytes(bytes(data))
    assert src.fingerprint() == fp  # memoised ...
    fp2 = src.fingerprint(refresh=True)  # ... until refreshed
    assert fp2 != fp and BinImageSource(bin_path, map_path).fingerprint() == fp2
    # change the map: new fingerprint
    np.save(map_path, np.array([[0, 1, -1], [-1, -1, -1], [-1, 2, -1]], dtype=np.int64))
    assert BinImageSource(bin_path, map_path).fingerprint() not in (fp, fp2)


# ----------------------------------------------------------------------------- FolderImageSource


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    imgs = {"a.png": gradient(50, 40, 1), "b.jpg": gradient(60, 30, 2), "sub/c.png": gradient(30, 30, 3)}
    for name, im in imgs.items():
        im.save(root / name)
    rows = [
        (0, "a.png"), (0, "b.jpg"),
        (2, "sub/c.png"), (2, "gone.png"),
        (3, "a.png"), (3, "b.jpg"), (3, "sub/c.png"), (3, "extra.png"),  # 4th row dropped
    ]
    table = write_csv(tmp_path / "trn_images.csv", ["item", "file"], rows)
    return root, table, imgs


def test_folder_source_csv(folder, caplog):
    root, table, imgs = folder
    with caplog.at_level(logging.WARNING, logger="vixml_lib.image_sources"):
        src = FolderImageSource(root, table)
    assert isinstance(src, ImageSource)
    assert src.n_items == 4 and len(src) == 4  # a, b, c, gone (shared files counted once)
    assert src.image_map.tolist() == [[0, 1, -1], [-1, -1, -1], [2, 3, -1], [0, 1, 2]]
    assert src.n_missing == 1 and src.n_dropped == 1
    text = caplog.text
    assert "1 of 4 image file(s)" in text and "missing" in text
    assert "1 row(s) beyond max_images=3 dropped" in text
    assert mad(src.load(0), imgs["a.png"]) == 0.0
    assert mad(src.load(2), imgs["sub/c.png"]) == 0.0
    assert src.load(1).mode == "RGB"
    with pytest.raises(FileNotFoundError, match="gone.png"):
        src.load(3)
    with pytest.raises(IndexError):
        src.load(4)
    # n_items given: padding rows; an item out of range is a table error
    assert FolderImageSource(root, table, n_items=6).image_map.shape == (6, 3)
    with pytest.raises(DataFormatError, match=r"trn_images\.csv:4: item 2 is out of range"):
        FolderImageSource(root, table, n_items=2)
    # max_images=1 keeps only the first row per item
    assert FolderImageSource(root, table, max_images=1).image_map[:, 0].tolist() == [0, -1, 1, 0]  # b, gone unused
    # open_image_source default names: <split>_images/ + <split>_images.csv
    os.rename(root, table.parent / "trn_images")
    s = open_image_source(table.parent, "trn", kind="folder")
    assert isinstance(s, FolderImageSource) and len(s) == 4


def test_folder_source_pickle_and_fingerprint(folder):
    root, table, imgs = folder
    src = FolderImageSource(root, table)
    fp = src.fingerprint()
    clone = pickle.loads(pickle.dumps(src))
    assert clone.fingerprint() == fp and mad(clone.load(1), src.load(1)) == 0.0
    assert FolderImageSource(root, table).fingerprint() == fp
    st = (root / "a.png").stat()
    os.utime(root / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    fp2 = FolderImageSource(root, table).fingerprint()
    assert fp2 != fp
    gradient(10, 10).save(root / "gone.png")  # a missing file appears
    fp3 = FolderImageSource(root, table).fingerprint()
    assert fp3 not in (fp, fp2)
    assert src.fingerprint(refresh=True) == fp3


@pytest.mark.parametrize(
    "content, line, match",
    [
        ("itm,file\n0,a.png\n", 1, "missing column 'item'"),
        ("item,path\n0,a.png\n", 1, "missing column 'file'"),
        ("", 1, "empty table"),
        ("item,file\n0,a.png\nx,b.png\n", 3, "non-negative integer, got 'x'"),
        ("item,file\n0,a.png\n\n-2,b.png\n", 4, "non-negative integer, got -2"),
        ("item,file\n0,a.png\n1.5,b.png\n", 3, "got '1.5'"),
        ("item,file\n0,a.png\n3\n", 3, "no value for column"),
        ("item,file\n0,a.png\n,b.png\n", 3, "empty 'item'"),
    ],
)
def test_folder_source_bad_table(tmp_path, content, line, match):
    (tmp_path / "imgs").mkdir()
    table = tmp_path / "t.csv"
    table.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match=match) as ei:
        FolderImageSource(tmp_path / "imgs", table)
    assert str(ei.value).startswith(f"{table}:{line}: ")


def test_folder_source_parquet(folder):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root, table, _ = folder
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    pt = table.with_suffix(".parquet")
    pq.write_table(pa.table({"item": [int(r["item"]) for r in rows], "file": [r["file"] for r in rows]}), pt)
    a, b = FolderImageSource(root, pt), FolderImageSource(root, table)
    assert np.array_equal(a.image_map, b.image_map) and a.files == b.files
    bad = table.with_name("bad.parquet")
    pq.write_table(pa.table({"item": [0, -1], "file": ["a.png", "b.jpg"]}), bad)
    with pytest.raises(DataFormatError, match=r"bad\.parquet:3:"):
        FolderImageSource(root, bad)


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *a, **k):
        if name.startswith("pyarrow"):
            raise ImportError("no pyarrow")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pip install pyarrow"):
        FolderImageSource(tmp_path / "imgs", tmp_path / "t.parquet")


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
    real_fetch = image_sources._fetch_one

    def interrupting_fetch(url, *a, **k):
        if url.endswith("/r5.png"):
            raise _Interrupt()
        return real_fetch(url, *a, **k)

    monkeypatch.setattr(image_sources, "_fetch_one", interrupting_fetch)
    out = tmp_path / "resumed"
    with pytest.raises(_Interrupt):
        download_images(table, out, "trn", **kw)
    monkeypatch.setattr(image_sources, "_fetch_one", real_fetch)
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


def test_open_image_source_url(tmp_path):
    for k in range(2):
        gradient(30, 30, k).save(tmp_path / f"{k}.png")
    write_csv(tmp_path / "tst_image_urls.csv", ["item", "url"],
              [(0, (tmp_path / "0.png").as_uri()), (2, (tmp_path / "1.png").as_uri())])
    src = open_image_source(tmp_path, "tst", kind="url", progress=False)
    assert isinstance(src, BinImageSource) and len(src) == 2
    assert src.image_map.tolist() == [[0, -1, -1], [-1, -1, -1], [1, -1, -1]]
    mtime = src.bin_path.stat().st_mtime_ns
    again = open_image_source(tmp_path, "tst", kind="url", progress=False)  # reuses the files
    assert again.bin_path.stat().st_mtime_ns == mtime and again.fingerprint() == src.fingerprint()
