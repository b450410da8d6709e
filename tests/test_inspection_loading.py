"""Loading run folders for inspection: checks that name the file, items, run space."""
import numpy as np
import pytest
import scipy.sparse as sp
from inspection_data import LABELS, write_dataset, write_run

from vixml_lib import inspection as insp
from vixml_lib.data import formats
from vixml_lib.errors import DataFormatError
from vixml_lib.runs import TrainFolder


def test_missing_files_and_disagreeing_shapes_are_clear_errors(tmp_path):
    data = write_dataset(tmp_path / "data")
    Q = np.eye(4, 2, dtype=np.float32)
    with pytest.raises(FileNotFoundError, match="nowhere: run folder not found"):
        insp.load_run(tmp_path / "nowhere", data)
    f = write_run(tmp_path / "no-lbl", data, Q, LABELS, [{}] * 4, skip=["embeddings_lbl.npy"])
    with pytest.raises(FileNotFoundError, match="no-lbl: missing embeddings_lbl.npy"):
        insp.load_run(f, data)
    f = write_run(tmp_path / "bad-pred", data, Q, LABELS, [{}] * 4)
    formats.write_predictions(TrainFolder(f).predictions, sp.csr_matrix((4, 3)))
    with pytest.raises(DataFormatError, match="predictions_tst.npz.*does not match"):
        insp.load_run(f, data)
    f = write_run(tmp_path / "bad-items", data, Q, LABELS, [{}] * 4, items_tst=[0, 1])
    with pytest.raises(DataFormatError, match="items_tst.npy: 2 entries"):
        insp.load_run(f, data)
    f = write_run(tmp_path / "subset", data, Q[:3], LABELS, [{}] * 3)  # 3 rows, no items_tst.npy
    with pytest.raises(ValueError, match="items_tst.npy"):
        insp.load_run(f, data)
    f = write_run(tmp_path / "all", data, Q, LABELS, [{}] * 4)  # every test row: 0..n-1
    assert insp.load_run(f, data).items_tst.tolist() == [0, 1, 2, 3]
    with pytest.raises(FileNotFoundError, match=r"holds all, bad-items"):
        insp.load_runs(tmp_path, ["all", "missing-run"], data)


def test_seeded_sample_when_items_were_not_saved(tmp_path):
    data = write_dataset(tmp_path / "data")
    f = write_run(tmp_path / "r", data, np.eye(2, 2), LABELS, [{}] * 2, config={"eval_max_queries": 2, "seed": 3})
    expect = np.sort(np.random.default_rng(3).choice(4, 2, replace=False))  # training's sample rule
    assert insp.load_run(f, data).items_tst.tolist() == expect.tolist()


def test_label_subset_maps_truth_and_filters_into_run_space(tmp_path):
    data = write_dataset(tmp_path / "data")
    # labels 4, 2, 3 only (run columns 0, 1, 2)
    f = write_run(tmp_path / "r", data, np.array([[1, 0], [0, 1]]), LABELS[[4, 2, 3]], [{1: 0.5}, {2: 1.0}],
                  items_tst=[3, 2], items_lbl=[4, 2, 3])
    run = insp.load_run(f, data)
    assert run.truth.toarray().tolist() == [[1, 1, 0], [1, 0, 0]]
    assert run.exclude.toarray().tolist() == [[0, 0, 0], [1, 0, 0]]  # (2, 4) kept, (3, 0) has no column here
    assert insp.query_details(run, 3, k=1)["top"][0]["label"] == 2
