"""Execute the notebooks in place, storing their outputs for the documentation.

The documentation shows the notebooks with the outputs stored in them, so that building it
takes seconds; the test suite (``pytest --nbmake``) executes them again and their assertions
fail when a claim no longer matches what the code does. After changing a notebook or anything
its output depends on, refresh the stored outputs from the repository root with

    python docs/execute_notebooks.py [notebooks/NAME.ipynb ...]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def execute(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    # The notebook imports the library from this checkout, whatever is installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    NotebookClient(
        notebook, timeout=600, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    seconds = time.perf_counter() - start
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timestamps: noise in every diff
    nbformat.write(notebook, path)
    return seconds


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        print(f"{path.name}: executed in {execute(path):.0f} s", flush=True)
