import gzip
import json
import os

import numpy as np
import pytest

from vixml_lib.data import formats
from vixml_lib.data.prepare import convert_json, load_dataset, prepare_dataset
from vixml_lib.errors import DataFormatError

LABELS = [
    {"uid": "L0", "title": "Norvik Couch", "content": "A couch."},
    {"uid": "L1", "title": "Café Mug", "content": "Ceramic\nmug."},
    {"uid": "L2", "title": "Trail   Sneakers", "content": ""},
]
TRAIN = [
    {"uid": "Q0", "title": "sofa cover", "content": "fits", "target_ind": [2, 0], "target_rel": [1.0, 1.0]},
    {"uid": "Q1", "title": "coffee cup", "content": "", "target_ind": [1], "target_rel": [1.0]},
]
TEST = [
    {"uid": "T0", "title": "running shoes", "content": "", "target_ind": [2], "target_rel": [1.0]},
    {"uid": "T1", "title": "no labels here", "content": "", "target_ind": [], "target_rel": []},
]


def write_json_gz(path, rows, raw_lines=None):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines or []:
            f.write(line + "\n")


@pytest.fixture
def json_dataset(tmp_path):
    d = tmp_path / "LF-TinyTitles"
    d.mkdir()
    write_json_gz(d / "lbl.json.gz", LABELS)
    write_json_gz(d / "trn.json.gz", TRAIN)
    write_json_gz(d / "tst.json.gz", TEST)
    (d / "filter_labels_test.txt").write_text("1 0\n")
    return d


def test_convert_writes_xml_repository_files(json_dataset):
    written = convert_json(json_dataset)
    assert {p.name for p in written} == {"trn.raw.txt", "tst.raw.txt", "lbl.raw.txt", "trn_X_Y.txt", "tst_X_Y.txt"}
    # titles only for *Titles* datasets; whitespace runs collapsed
    assert (json_dataset / "lbl.raw.txt").read_text(encoding="utf-8").splitlines() == [
        "Norvik Couch", "Café Mug", "Trail Sneakers"]
    lines = (json_dataset / "trn_X_Y.txt").read_text().splitlines()
    assert lines[0].split() == ["2", "3"]
    # row 0 labels sorted by index
    assert [p.split(":")[0] for p in lines[1].split()] == ["0", "2"]
    Y = formats.read_xy(json_dataset / "tst_X_Y.txt")
    assert Y.shape == (2, 3) and Y[0].indices.tolist() == [2] and Y[1].nnz == 0


def test_title_and_content_mode_and_latin1(json_dataset):
    convert_json(json_dataset, title_only=False, encoding="latin-1")
    raw = (json_dataset / "lbl.raw.txt").read_bytes()
    assert "Café Mug Ceramic mug.".encode("latin-1") in raw  # newline inside content flattened
    texts = formats.read_texts(json_dataset / "lbl.raw.txt", encoding="latin-1")
    assert texts[0] == "Norvik Couch A couch." and texts[2] == "Trail Sneakers"


def test_prepare_loads_and_cross_checks(json_dataset):
    ds = prepare_dataset(json_dataset)
    assert ds.n_labels == 3
    assert ds.Y["trn"].shape == (2, 3)
    assert ds.filters["tst"].tolist() == [[1, 0]]
    assert ds.filters["trn"].shape == (0, 2)  # missing filter file: nothing filtered
    assert ds.summary()["train_pairs"] == 3


def test_up_to_date_outputs_are_not_rewritten(json_dataset):
    convert_json(json_dataset)
    stamp = (json_dataset / "trn_X_Y.txt").stat().st_mtime_ns
    assert convert_json(json_dataset) == []
    assert (json_dataset / "trn_X_Y.txt").stat().st_mtime_ns == stamp
    assert len(convert_json(json_dataset, force=True)) == 5


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"uid": "Q9", "title": "x", "target_ind": [3], "target_rel": [1.0]}', "label index 3 out of range [0, 3)"),
        ('{"uid": "Q9", "title": "x", "target_ind": [1, 2], "target_rel": [1.0]}', "as long as 'target_ind' (2)"),
        ('{"uid": "Q9", "title": "x", "target_ind": ["a"]}', "list of integers"),
        ('{"uid": "Q9", "title": "x", "target_ind": [1, 1], "target_rel": [1.0, 1.0]}', "repeated label index"),
        ('{"uid": "Q9", "title": "x", "target_ind": [1', "not valid JSON"),
        ('{"uid": "Q9", "target_ind": [1]}', "'title' field"),
    ],
)
def test_bad_json_rows_name_file_and_line(json_dataset, bad_line, message):
    write_json_gz(json_dataset / "trn.json.gz", TRAIN, raw_lines=[bad_line])
    with pytest.raises(DataFormatError) as e:
        convert_json(json_dataset)
    assert e.value.line == 3 and "trn.json.gz:3" in str(e.value)
    assert message in str(e.value)
    # nothing written when a split is bad
    assert not (json_dataset / "lbl.raw.txt").exists()


def test_text_count_must_match_label_rows(json_dataset):
    convert_json(json_dataset)
    with open(json_dataset / "tst.raw.txt", "a", encoding="utf-8") as f:
        f.write("an extra text\n")
    with pytest.raises(DataFormatError, match=r"2 label rows but tst.raw.txt has 3 texts"):
        load_dataset(json_dataset)


def test_label_count_must_match_header(json_dataset):
    convert_json(json_dataset)
    with open(json_dataset / "lbl.raw.txt", "a", encoding="utf-8") as f:
        f.write("a fourth label\n")
    with pytest.raises(DataFormatError, match=r"header says 3 labels but lbl.raw.txt has 4 lines"):
        load_dataset(json_dataset)


def test_filter_out_of_range_is_reported(json_dataset):
    convert_json(json_dataset)
    (json_dataset / "filter_labels_test.txt").write_text("0 1\n5 0\n")
    with pytest.raises(DataFormatError) as e:
        load_dataset(json_dataset)
    assert "filter_labels_test.txt:2" in str(e.value)


def test_missing_files_say_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="vixml prepare"):
        load_dataset(tmp_path)


def test_image_maps_are_loaded_and_checked(json_dataset):
    convert_json(json_dataset)
    np.save(json_dataset / "lbl_imgs_384_3_map.npy", np.array([[0, -1, -1], [1, 2, -1], [-1, -1, -1]], dtype=np.int64))
    ds = load_dataset(json_dataset)
    assert ds.image_maps["lbl"].shape == (3, 3)
    np.save(json_dataset / "trn_imgs_384_3_map.npy", np.zeros((5, 3), dtype=np.int64))
    with pytest.raises(DataFormatError):
        load_dataset(json_dataset)
    os.remove(json_dataset / "trn_imgs_384_3_map.npy")


def test_a_replaced_source_with_an_older_mtime_is_still_converted(json_dataset):
    """cp -p: the new trn.json.gz is older than the derived files; its content decides."""
    convert_json(json_dataset)
    before = formats.read_xy(json_dataset / "trn_X_Y.txt")
    old = os.stat(json_dataset / "trn.json.gz")
    rows = TRAIN + [{"uid": "Q2", "title": "new query", "target_ind": [0], "target_rel": [1.0]}]
    write_json_gz(json_dataset / "trn.json.gz", rows)
    os.utime(json_dataset / "trn.json.gz", ns=(old.st_atime_ns - 10**9, old.st_mtime_ns - 10**9))
    assert len(convert_json(json_dataset)) == 5
    after = formats.read_xy(json_dataset / "trn_X_Y.txt")
    assert before.shape[0] == 2 and after.shape[0] == 3
    # touched but unchanged: not converted again
    os.utime(json_dataset / "trn.json.gz")
    assert convert_json(json_dataset) == []
    # another setting (title + content): converted again
    assert len(convert_json(json_dataset, title_only=False)) == 5


def test_a_full_disk_leaves_the_old_outputs_and_no_temporary_file(json_dataset, monkeypatch):
    import errno

    from vixml_lib.errors import OutputError

    convert_json(json_dataset)
    before = {p.name: p.read_bytes() for p in json_dataset.iterdir()}
    write_json_gz(json_dataset / "tst.json.gz", TEST[:1])
    real = formats.write_xy

    def full_disk(path, Y):
        if "tst_X_Y" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, Y)

    monkeypatch.setattr(formats, "write_xy", full_disk)
    with pytest.raises(OutputError, match="no space left.*nothing was changed"):
        convert_json(json_dataset)
    after = {p.name: p.read_bytes() for p in json_dataset.iterdir()}
    assert {k: v for k, v in after.items() if k != "tst.json.gz"} == {k: v for k, v in before.items()
                                                                       if k != "tst.json.gz"}
    monkeypatch.setattr(formats, "write_xy", real)
    assert len(convert_json(json_dataset)) == 5  # the stamp was not updated: converted next time


def test_prepare_checks_everything_before_writing(json_dataset):
    """A bad image map (past its .bin) is found before any raw/X_Y file is written."""
    from vixml_lib.images.store import write_image_bin

    write_image_bin(json_dataset / "lbl_imgs_384_3.bin", [b"aGVsbG8=", b"aGVsbG8="])  # 2 images
    np.save(json_dataset / "lbl_imgs_384_3_map.npy", np.array([[0], [1], [2]], dtype=np.int64))
    with pytest.raises(DataFormatError, match=r"lbl_imgs_384_3_map.npy: item row 2.*image index 2 is out of range"):
        prepare_dataset(json_dataset)
    assert not (json_dataset / "lbl.raw.txt").exists() and not (json_dataset / ".vixml-prepared.json").exists()
    np.save(json_dataset / "lbl_imgs_384_3_map.npy", np.array([[0], [1], [-1]], dtype=np.int64))
    assert prepare_dataset(json_dataset).image_maps["lbl"].shape == (3, 1)


@pytest.mark.parametrize("name, data, message", [
    ("lbl.json.gz", b"", "empty file (0 bytes)"),
    ("trn.json.gz", gzip.compress(b""), "no items"),
    ("trn.json.gz", b'{"title": "x"}\n', "not a gzip file (it looks like uncompressed JSON"),
])
def test_empty_and_foreign_files_blame_themselves(json_dataset, name, data, message):
    (json_dataset / name).write_bytes(data)
    with pytest.raises(DataFormatError) as e:
        prepare_dataset(json_dataset)
    assert str(e.value).startswith(str(json_dataset / name)) and message in str(e.value)


def test_corrupt_gzip_is_diagnosed_as_corruption_not_json(json_dataset):
    rows = [{"uid": f"Q{i}", "title": f"query number {i} " * 5, "target_ind": [i % 3]} for i in range(400)]
    write_json_gz(json_dataset / "trn.json.gz", rows)
    data = bytearray((json_dataset / "trn.json.gz").read_bytes())
    for at in range(len(data) // 3, len(data) // 3 + 40, 4):  # damage inside the deflate stream
        data[at] ^= 0xFF
    (json_dataset / "trn.json.gz").write_bytes(bytes(data))
    with pytest.raises(DataFormatError) as e:
        convert_json(json_dataset)
    assert "trn.json.gz" in str(e.value) and "corrupt gzip data" in str(e.value)


@pytest.mark.parametrize("bad_line, message", [
    ('{"uid": "Q9", "title": "x", "target_ind": [true]}', "'target_ind' must be a list of integers"),
    ('{"uid": "Q9", "title": "x", "target_ind": [0], "target_rel": ["high"]}', "'target_rel' must hold finite"),
    ('{"uid": "Q9", "title": 3, "target_ind": [0]}', "string 'title'"),
])
def test_wrong_field_types_name_file_and_line(json_dataset, bad_line, message):
    write_json_gz(json_dataset / "trn.json.gz", TRAIN, raw_lines=[bad_line])
    with pytest.raises(DataFormatError, match=message) as e:
        convert_json(json_dataset)
    assert "trn.json.gz:3" in str(e.value)
