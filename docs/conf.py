"""Sphinx configuration of the lrr_optax documentation.

Build (from the repository root, warnings are errors):

    sphinx-build -W --keep-going -b html docs site

The notebooks and the benchmark results live outside docs/; they are copied into
docs/_generated/ at the start of every build, so a result that is not there yet is simply
left out. The notebooks are shown as stored (without outputs: the test suite executes them);
set LRR_DOCS_EXECUTE=1 to execute them during the build and show their figures.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import lrr_optax

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"

project = "lrr_optax"
author = "lrr_optax developers"
copyright = "lrr_optax developers"
release = version = lrr_optax.__version__

extensions = [
    "myst_nb",  # Markdown pages and notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings are Google style
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
# The copied results are shown through the generated benchmarks page, not as pages.
exclude_patterns = ["_build", "**.ipynb_checkpoints", "jupyter_execute", "_generated/results"]

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
nb_execution_mode = "force" if os.environ.get("LRR_DOCS_EXECUTE") else "off"
nb_execution_timeout = 300
nb_execution_raise_on_error = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
# Keep optax's alias by name rather than spelling out the union it stands for.
autodoc_type_aliases = {"optax.ScalarOrSchedule": "optax.ScalarOrSchedule"}
python_maximum_signature_line_length = 88
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"lrr_optax {version}"

NOTEBOOKS = ("01_quickstart", "02_learning_rate_rates", "03_many_devices")


def _copy_notebooks() -> None:
    target = GENERATED / "notebooks"
    target.mkdir(parents=True)
    for name in NOTEBOOKS:
        shutil.copy2(ROOT / "notebooks" / f"{name}.ipynb", target / f"{name}.ipynb")


def _nest_headings(markdown: str, under: int) -> str:
    """Put a report's headings below a level-``under`` heading, one level at a time.

    Outside code fences, each heading goes ``under`` levels down, and never more than one
    level below the heading before it (Sphinx warns about skipped levels).
    """
    lines, fenced, last = [], False, under
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        heading = None if fenced else re.match(r"(#{1,6}) (.*)", line)
        if heading:
            last = min(len(heading.group(1)) + under, last + 1, 6)
            line = "#" * last + " " + heading.group(2)
        lines.append(line)
    return "\n".join(lines)


def _benchmark_page() -> None:
    """docs/_generated/benchmarks.md: every results/*.md and every figure, whatever is there."""
    results = ROOT / "benchmarks" / "results"
    target = GENERATED / "results"
    page = [
        "# Benchmark results",
        "",
        "The results committed in `benchmarks/results/`, each with the exact command, date and",
        'machine that produced it. Reproduce them with `pip install -e ".[dev,bench]" &&',
        "python -m benchmarks` (see the benchmark suite's `--help`).",
        "",
    ]
    if not results.is_dir() or not any(results.iterdir()):
        page.append("No benchmark results have been committed yet.")
    else:
        shutil.copytree(results, target)
        shown: set[str] = set()
        for report in sorted(target.glob("*.md")):
            text = report.read_text(encoding="utf-8")
            # Every report is a section of this one page: a link to another report is its name.
            text = re.sub(r"\[([^\]]*)\]\((?![a-z]+:|/|#)[^)\s]+\.md\)", r"\1", text)
            # The files a report links to or shows by a relative path are next to it.
            text = re.sub(
                r"(\]\()(?![a-z]+:|/|#)([^)\s]+)",
                lambda m: f"{m.group(1)}results/{m.group(2)}",
                text,
            )
            shown.update(
                Path(name).name for name in re.findall(r"!\[[^\]]*\]\(results/([^)\s]+)", text)
            )
            page += [f"## {report.stem}", "", _nest_headings(text, under=2), ""]
            # A figure named like the report belongs to it.
            for figure in sorted(target.glob(f"{report.stem}*.png")):
                if figure.name not in shown:
                    shown.add(figure.name)
                    page += [f"![{figure.stem}](results/{figure.name})", ""]
        figures = [p for p in sorted(target.rglob("*.png")) if p.name not in shown]
        if figures:
            page += ["## Other figures", ""]
        for figure in figures:
            relative = figure.relative_to(GENERATED).as_posix()
            page += [f"### {figure.stem}", "", f"![{figure.stem}]({relative})", ""]
    (GENERATED / "benchmarks.md").write_text("\n".join(page) + "\n", encoding="utf-8")


def _tidy_signature(app, what, name, obj, options, signature, return_annotation):
    """Undo Sphinx's spelling of a type alias nested in a generic, ``TypeAliasForwardRef('…')``."""

    def tidy(text):
        return re.sub(r"TypeAliasForwardRef\('([^']+)'\)", r"\1", text) if text else text

    return tidy(signature), tidy(return_annotation)


def setup(app):
    app.connect("autodoc-process-signature", _tidy_signature)


shutil.rmtree(GENERATED, ignore_errors=True)
GENERATED.mkdir()
_copy_notebooks()
_benchmark_page()
