"""Product images: the authors' store, image sources, vision encoders and the feature cache.

Modules (import the heavier ones directly; this package imports only the store and maps,
and never torch):

- ``store``: the authors' ``.bin`` store (one base64 image a line): line codec, ``ImageBin``,
  ``write_image_bin``, ``bin_paths``;
- ``maps``: item -> image maps (read, validate, save, counts, official object-map conversion);
- ``tables``: item tables (CSV / parquet ``item,file`` or ``item,url``) -> per-item lists;
- ``sources``: the ``ImageSource`` contract, ``BinImageSource``, ``FolderImageSource``,
  ``open_image_source``;
- ``download``: the resumable URL downloader into the authors' layout (``download_images``);
  ``download_fetch``: one URL with retries; ``download_journal``: its resume journal;
- ``encoders``: ``create_vision_encoder`` by name (the one import for encoders);
  ``encoder_base``: ``VisionEncoder`` and its picklable preprocessors; ``offline_encoders``:
  fixed-weight encoders that need no download (``offline_efficientnet``: the pretrained
  ImageNet EfficientNet-Lite0 from PyPI packages); ``hub_encoders``: transformers models from
  the hub or a folder;
- ``cache``: the feature-cache format and reader (``FeatureCache``, ``feature_cache_dir``);
  ``cache_write``: durable writes and the header shared by the writers; ``cache_build``:
  ``build_feature_cache`` (resumable); ``authors``: ``import_authors_features``;
- ``probes``: what image vectors keep (attributes, item features, linear probe, neighbours);
- ``plots``: notebook 02's figures.

Re-exported here (what ``vixml_lib.images`` offered as a module): ``encode_image_line``,
``decode_image_line``, ``write_image_bin``, ``ImageBin``, ``read_image_map``,
``validate_image_map``, ``image_counts``, ``convert_object_map``.
"""
from .maps import convert_object_map, image_counts, read_image_map, validate_image_map
from .store import ImageBin, decode_image_line, encode_image_line, write_image_bin

__all__ = [
    "encode_image_line",
    "decode_image_line",
    "write_image_bin",
    "ImageBin",
    "read_image_map",
    "validate_image_map",
    "image_counts",
    "convert_object_map",
]
