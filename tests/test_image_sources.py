"""Tests for vixml_lib.images.sources (bin and folder sources, open_image_source) and
vixml_lib.images.tables (the item tables they read)."""
import csv
import logging
import os
import pickle

import numpy as np
import pytest
from image_data import gradient, mad, write_csv

from vixml_lib.errors import DataFormatError
from vixml_lib.images.sources import (
    BinImageSource,
    FolderImageSource,
    ImageSource,
    bin_source_for_split,
    open_image_source,
)
from vixml_lib.images.store import encode_image_line, write_image_bin

# ----------------------------------------------------------------------------- helpers


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
    with caplog.at_level(logging.WARNING, logger="vixml_lib.images"):
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
