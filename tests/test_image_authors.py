"""Tests for vixml_lib.images.authors: importing the authors' precomputed features."""
import logging
import os

import numpy as np
import pytest
from test_image_cache import FINAL_FILES, files_of

from vixml_lib.errors import DataFormatError
from vixml_lib.images.authors import import_authors_features

# ---------------------------------------------------------------------------------------------
# the authors' precomputed features
# ---------------------------------------------------------------------------------------------


def _authors_files(tmp_path, n=23, dim=24, dtype=np.float32):
    feats = np.random.default_rng(0).standard_normal((n, dim)).astype(dtype)
    np.save(tmp_path / "trn_embs_imgs_3_1152_siglip2.npy", feats)
    lists = [[0, 1], -1, [2], [3, 4, 5], [], [22]]
    obj = np.empty(len(lists), dtype=object)
    obj[:] = lists
    np.save(tmp_path / "obj_map.npy", obj, allow_pickle=True)
    plain = np.array([[0, 1, -1], [-1, -1, -1], [2, -1, -1], [3, 4, 5], [-1, -1, -1], [22, -1, -1]], dtype=np.int64)
    np.save(tmp_path / "plain_map.npy", plain)
    return feats, plain


def test_import_authors_features_plain_map(tmp_path):
    feats, plain = _authors_files(tmp_path)
    out = tmp_path / "c"
    cache = import_authors_features(tmp_path / "trn_embs_imgs_3_1152_siglip2.npy", tmp_path / "plain_map.npy", out,
                                    chunk_rows=5, progress=False)
    assert set(os.listdir(out)) == FINAL_FILES
    assert cache.encoder == "google/siglip2-so400m-patch14-384" and cache.header["origin"] == "imported"
    assert (cache.count, cache.dim, cache.n_items) == (23, 24, 6)
    np.testing.assert_array_equal(cache.vectors_for_images(np.arange(23)), feats.astype(np.float16).astype(np.float32))
    vec, mask = cache.read_batch(np.arange(6))
    np.testing.assert_array_equal(mask, plain >= 0)
    np.testing.assert_array_equal(vec[3, 2], feats[5].astype(np.float16).astype(np.float32))
    for name in ("map.npy", "valid.npy"):
        np.load(out / name, allow_pickle=False)
    before = files_of(out)
    import_authors_features(tmp_path / "trn_embs_imgs_3_1152_siglip2.npy", tmp_path / "plain_map.npy", out,
                            progress=False)  # reused
    assert files_of(out) == before


def test_import_authors_features_pickled_map(tmp_path, caplog):
    feats, plain = _authors_files(tmp_path, dtype=np.float16)
    npy = tmp_path / "trn_embs_imgs_3_1152_siglip2.npy"
    with pytest.raises(DataFormatError, match="allow_pickle_map=True"):
        import_authors_features(npy, tmp_path / "obj_map.npy", tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "vectors.f16").exists()
    with caplog.at_level(logging.WARNING, logger="vixml_lib.images.authors"):
        cache = import_authors_features(npy, tmp_path / "obj_map.npy", tmp_path / "c", allow_pickle_map=True,
                                        progress=False)
    assert "unpickling" in caplog.text
    np.testing.assert_array_equal(cache.image_map, plain)
    np.testing.assert_array_equal(np.load(tmp_path / "c" / "map.npy", allow_pickle=False), plain)
    np.testing.assert_array_equal(cache.vectors_for_images([22]), feats[22:].astype(np.float32))


def test_import_rejects_map_past_the_end(tmp_path):
    _authors_files(tmp_path, n=10)
    with pytest.raises(DataFormatError, match="item row 5 .*image index 22"):
        import_authors_features(tmp_path / "trn_embs_imgs_3_1152_siglip2.npy", tmp_path / "plain_map.npy",
                                tmp_path / "c", progress=False)
