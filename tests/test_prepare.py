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
