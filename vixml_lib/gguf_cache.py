"""A disk cache of de-quantised GGUF backbones, so that each process loads them in a second.

transformers de-quantises a GGUF file in Python on every load (SmolLM2-135M: ~30 s on a
2-core CPU). Each notebook is its own process, so the demo paid that in notebooks 03, 04 and
05. The first load now writes the de-quantised model and its tokenizer, in the dtype
transformers produced, as an ordinary Hugging Face folder (``config.json``,
``model.safetensors``, tokenizer files; no pickle); later loads read that folder.

Where: ``$VIXML_CACHE_DIR/gguf/`` (default ``$XDG_CACHE_HOME/vixml`` or ``~/.cache/vixml``),
one folder per GGUF file, named by the file's name, size and modification time and the
transformers version (a replaced file or another transformers gets a new folder). A folder
is written under a temporary name and renamed when complete, so a killed process leaves no
half-written cache; an unwritable cache directory only costs the speed (a warning).
``VIXML_GGUF_CACHE=0`` turns the cache off.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .pretrained import PretrainedSource, from_pretrained, slug

log = logging.getLogger(__name__)

__all__ = ["cache_root", "cache_enabled", "cached_folder", "dequantised_source", "load"]

COMPLETE = "vixml-gguf.json"  # written last, inside the temporary folder, before the rename


def cache_root() -> Path:
    """``$VIXML_CACHE_DIR``, else ``$XDG_CACHE_HOME/vixml``, else ``~/.cache/vixml``."""
    if os.environ.get("VIXML_CACHE_DIR"):
        return Path(os.environ["VIXML_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vixml"


def cache_enabled() -> bool:
    return os.environ.get("VIXML_GGUF_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cached_folder(src: PretrainedSource) -> Path:
    """The cache folder of ``src``'s GGUF file (it may not exist yet)."""
    import transformers

    file = Path(src.path) / src.gguf_file
    st = file.stat()
    key = f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{slug(Path(src.gguf_file).stem)}-{digest}"


def _complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


def _write(src: PretrainedSource, folder: Path) -> None:
    """De-quantise ``src`` (model and tokenizer) into ``folder``, atomically."""
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    from .io_utils import write_json

    log.info("de-quantising %s once into the cache %s", src.gguf_file, folder)
    model = from_pretrained(AutoModel.from_pretrained, src)  # the dtype the GGUF loader gives (float32)
    tokenizer = from_pretrained(AutoTokenizer.from_pretrained, src)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        # transformers refuses save_pretrained on a GGUF-loaded model: write its config without the
        # quantisation entry and its (already de-quantised) tensors ourselves
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        write_json(tmp / COMPLETE, {"source": str(Path(src.path) / src.gguf_file), "name": src.name})
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep its folder
            if not _complete(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dequantised_source(src: PretrainedSource) -> PretrainedSource:
    """``src`` itself when it is not a GGUF file or the cache is off; otherwise the cached
    de-quantised folder, written on first use (and rewritten when a cached folder is broken)."""
    if not src.gguf_file or not cache_enabled():
        return src
    try:
        folder = cached_folder(src)
        if not _complete(folder):
            if folder.exists():  # a folder without its completion mark is not ours to trust
                shutil.rmtree(folder, ignore_errors=True)
            _write(src, folder)
    except OSError as e:
        log.warning("GGUF cache not usable (%s); de-quantising %s in memory", e, src.gguf_file)
        return src
    return PretrainedSource(src.name, str(folder))


def forget(src: PretrainedSource) -> None:
    """Remove ``src``'s cache folder (used when it turns out unreadable)."""
    if src.gguf_file:
        shutil.rmtree(cached_folder(src), ignore_errors=True)


def load(loader, src: PretrainedSource, **kwargs):
    """``from_pretrained(loader, src, ...)`` through the cache: a GGUF source is read from its
    de-quantised folder; a cached folder that cannot be read is removed and the GGUF file used."""
    cached = dequantised_source(src)
    if cached is src:
        return from_pretrained(loader, src, **kwargs)
    try:
        return from_pretrained(loader, cached, **kwargs)
    except Exception as e:  # noqa: BLE001 - a damaged cache fails in many ways; the GGUF file is the truth
        log.warning("the cached copy %s is not readable (%s: %s); removing it and reading %s", cached.path,
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "", src.gguf_file)
        forget(src)
        return from_pretrained(loader, src, **kwargs)
