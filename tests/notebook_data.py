"""Shared by the pipeline tests: a small notebook written on the fly."""
from pathlib import Path

import nbformat


def make_notebook(path: Path, params_src: str, *cells: str) -> None:
    """A notebook with a ``parameters`` cell ``params_src`` and code ``cells``, for the python3 kernel."""
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
