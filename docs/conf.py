"""Sphinx configuration of the lrr_optax documentation.

Build (from the repository root, warnings are errors):

    sphinx-build -W --keep-going -b html docs site

The notebooks and the benchmark results live outside docs/; they are copied into
docs/_generated/ at the start of every build, so a result that is not there yet is simply
left out. The notebooks are shown with the outputs stored in them (refresh them with
``python docs/execute_notebooks.py``; the test suite executes them again), so the build takes
seconds; set LRR_DOCS_EXECUTE=1 to execute them during the build instead.

Links to the optax, JAX and Flax documentation (intersphinx) need the network at build time:
set LRR_DOCS_INTERSPHINX=1 to turn them on. Offline, the names are shown without links.
"""

from __future__ import annotations

import json
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
    "sphinx.ext.intersphinx",
]

# Fetching the inventories needs the network; offline, a failed fetch is a warning, which -W
# turns into an error. So the links are opt-in.
intersphinx_mapping = (
    {
        "python": ("https://docs.python.org/3", None),
        "jax": ("https://docs.jax.dev/en/latest", None),
        "optax": ("https://optax.readthedocs.io/en/latest", None),
        "flax": ("https://flax.readthedocs.io/en/latest", None),
        "orbax": ("https://orbax.readthedocs.io/en/latest", None),
    }
    if os.environ.get("LRR_DOCS_INTERSPHINX")
    else {}
)

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


def _copy_notebooks() -> None:
    """Copy notebooks/*.ipynb, refusing one without stored outputs (the pages would be bare)."""
    target = GENERATED / "notebooks"
    target.mkdir(parents=True)
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(source.read_text(encoding="utf-8"))
        code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        if nb_execution_mode == "off" and any(cell["execution_count"] is None for cell in code):
            raise RuntimeError(
                f"{source.name} has cells without stored outputs: run "
                f"`python docs/execute_notebooks.py {source.relative_to(ROOT)}`"
            )
        # The notebooks link the docs as seen from notebooks/; here they sit in _generated/.
        text = source.read_text(encoding="utf-8").replace("](../docs/", "](../../")
        (target / source.name).write_text(text, encoding="utf-8")


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


def _relink(text: str) -> str:
    """A report's links, made to work from a page in docs/_generated/."""
    # Every report is a section of the appendix page: a link to another report is its name.
    text = re.sub(r"\[([^\]]*)\]\((?![a-z]+:|/|#)[^)\s]+\.md\)", r"\1", text)
    # The files a report links to or shows by a relative path are in _generated/results/.
    return re.sub(
        r"(\]\()(?![a-z]+:|/|#)([^)\s]+)", lambda m: f"{m.group(1)}results/{m.group(2)}", text
    )


def _section(report: Path, heading: str) -> str | None:
    """The first section of ``report`` (level 2 or 3) whose title starts with ``heading``."""
    if not report.is_file():
        return None
    text = report.read_text(encoding="utf-8")
    title = re.search(rf"^(#{{2,3}}) {re.escape(heading)}.*?\n", text, re.M)
    if title is None:
        return None
    # The section ends at the next title of its own level or above.
    end = re.compile(rf"^#{{1,{len(title.group(1))}}} ", re.M).search(text, title.end())
    return text[title.end() : end.start() if end else len(text)].strip()


# The curated results page: (report, section title prefix, title on the page). A section that
# a report does not have (yet) is left out, so the page follows whatever is committed.
CURATED = (
    ("quick5.md", "The goal", "Headline: the defaults at every initial learning rate"),
    (
        "quick5.md",
        "The defaults' worst case against each",
        "The defaults against the learning-rate-free optimizers",
    ),
    ("quick.md", "Order study", "What the order buys"),
    ("defaults.md", "What ships", "The defaults"),
    ("defaults.md", "Where the goal is not met", "Where the goal is not met"),
)
HEADLINE_FIGURE = "quick5.png"


def _results_pages() -> None:
    """docs/_generated/results.md (curated) and benchmarks.md (every report, as an appendix)."""
    results = ROOT / "benchmarks" / "results"
    target = GENERATED / "results"
    curated = [
        "# Results",
        "",
        "Selected from the reports committed in `benchmarks/results/`; each report states the",
        "exact command, date, commit and machine that produced it, and is reproduced in full in",
        "the [appendix](benchmarks.md). The first command to run is",
        "`python -m benchmarks --demo` (a few minutes on a laptop), then",
        "`python -m benchmarks` for the full quality suite and `python -m benchmarks.speed` for",
        "the speed suite.",
        "",
    ]
    appendix = [
        "# Appendix: raw reports",
        "",
        "Every report committed in `benchmarks/results/`, in full, with the exact command, date",
        "and machine that produced it, then every figure.",
        "",
    ]
    if not results.is_dir() or not any(results.glob("*.md")):
        curated.append("No benchmark results have been committed yet.")
        appendix.append("No benchmark results have been committed yet.")
    else:
        shutil.copytree(results, target)
        if (target / HEADLINE_FIGURE).is_file():
            curated += [
                f"![final train loss against initial learning rate](results/{HEADLINE_FIGURE})",
                "",
            ]
        for report, heading, title in CURATED:
            body = _section(results / report, heading)
            if body is not None:
                curated += [
                    f"## {title}",
                    "",
                    f"From `{report}`.",
                    "",
                    _nest_headings(_relink(body), under=2),
                    "",
                ]
        shown: set[str] = set()
        for report in sorted(target.glob("*.md")):
            text = _relink(report.read_text(encoding="utf-8"))
            shown.update(
                Path(name).name for name in re.findall(r"!\[[^\]]*\]\(results/([^)\s]+)", text)
            )
            appendix += [f"## {report.stem}", "", _nest_headings(text, under=2), ""]
            # A figure named like the report belongs to it.
            for figure in sorted(target.glob(f"{report.stem}*.png")):
                if figure.name not in shown:
                    shown.add(figure.name)
                    appendix += [f"![{figure.stem}](results/{figure.name})", ""]
        figures = [p for p in sorted(target.rglob("*.png")) if p.name not in shown]
        if figures:
            appendix += ["## Other figures", ""]
        for figure in figures:
            relative = figure.relative_to(GENERATED).as_posix()
            appendix += [f"### {figure.stem}", "", f"![{figure.stem}]({relative})", ""]
    (GENERATED / "results.md").write_text("\n".join(curated) + "\n", encoding="utf-8")
    (GENERATED / "benchmarks.md").write_text("\n".join(appendix) + "\n", encoding="utf-8")


def _copy_top_level() -> None:
    """The changelog and the license, as pages."""
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    (GENERATED / "changelog.md").write_text(changelog, encoding="utf-8")
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    (GENERATED / "license.md").write_text(
        "# License\n\n`lrr_optax` is distributed under the Apache License 2.0.\n\n"
        + "```text\n"
        + license_text
        + "\n```\n",
        encoding="utf-8",
    )


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
_results_pages()
_copy_top_level()
