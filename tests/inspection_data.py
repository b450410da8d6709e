"""Hand-made datasets and run folders shared by the tests/test_inspection_*.py files."""
import json

import numpy as np
import scipy.sparse as sp
import yaml

from vixml_lib import inspection as insp
from vixml_lib.data import formats
from vixml_lib.runs import TrainFolder

S30, C30 = 0.5, np.sqrt(3) / 2
# label embeddings at 0, 30, 60, 90 and 180 degrees: the score of a query at angle t is cos(t - angle)
LABELS = np.array([[1, 0], [C30, S30], [S30, C30], [0, 1], [-1, 0]], dtype=np.float32)
TEST_TITLES = ["Red oak chair", "Blue steel bowl", "red hat", "Green RED lamp"]


def write_dataset(d, n_labels=5):
    d.mkdir(parents=True, exist_ok=True)
    formats.write_texts(d / "lbl.raw.txt", [f"label {j}" for j in range(n_labels)])
    formats.write_texts(d / "trn.raw.txt", ["train a", "train b"])
    formats.write_xy(d / "trn_X_Y.txt", sp.csr_matrix(np.eye(2, n_labels, dtype=np.float32)))
    formats.write_texts(d / "tst.raw.txt", TEST_TITLES)
    Y = np.zeros((4, n_labels), np.float32)
    Y[0, 1] = 1
    Y[1, [0, 3]] = 1  # test row 1: labels 0 and 3
    Y[2, 4] = 1  # test row 2: label 4, which is also a filter pair
    Y[3, [2, 4]] = 1  # test row 3: labels 2 and 4
    formats.write_xy(d / "tst_X_Y.txt", sp.csr_matrix(Y))
    # (3, 0): drops label 0 from row 3's predictions; (2, 4): a filtered true pair; (0, 1): a row not evaluated
    formats.write_filter(d / "filter_labels_test.txt", np.array([[3, 0], [2, 4], [0, 1]]))
    formats.write_filter(d / "filter_labels_train.txt", np.zeros((0, 2), np.int64))
    return d


def write_run(folder, data_dir, emb_tst, emb_lbl, pred_rows, items_tst=None, items_lbl=None, final=None, skip=(),
              config=None):
    """A training run folder (``skip``: names of its files to leave out)."""
    run = TrainFolder(folder)
    run.path.mkdir(parents=True, exist_ok=True)
    cfg = {"data_dir": str(data_dir), "seed": 0, "eval_max_queries": None, **(config or {})}
    run.config.write_text(yaml.safe_dump(cfg))
    run.metrics.write_text(json.dumps({"run": run.name, "use_images": False, "final": final or {}}))
    np.save(run.embeddings("tst"), np.asarray(emb_tst, np.float32))
    np.save(run.embeddings("lbl"), np.asarray(emb_lbl, np.float32))
    pred = sp.lil_matrix((len(emb_tst), len(emb_lbl)), dtype=np.float32)
    for r, entries in enumerate(pred_rows):
        for lab, score in entries.items():
            pred[r, lab] = score
    formats.write_predictions(run.predictions, pred.tocsr())
    if items_tst is not None:
        np.save(run.items("tst"), np.asarray(items_tst, np.int64))
    if items_lbl is not None:
        np.save(run.items("lbl"), np.asarray(items_lbl, np.int64))
    for name in skip:
        (run.path / name).unlink()
    return run.path


def make_hand_run(tmp_path):
    """Run A evaluates test rows 3, 1, 2 (in that order) with queries at 0, 90 and 180 degrees."""
    data = write_dataset(tmp_path / "data")
    queries = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    # top-2 predictions as training would store them; row 0 also holds the filtered label 0 at the top
    preds = [{0: 1.0, 1: C30, 2: S30}, {3: 1.0, 2: C30}, {3: 1e-3, 2: -S30}]  # (0 is not stored in a sparse matrix)
    folder = write_run(tmp_path / "train" / "a", data, queries, LABELS, preds, items_tst=[3, 1, 2])
    return insp.load_run(folder, data), data
