"""The README's usage example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import jax

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_blocks_run():
    # Top-level blocks are complete programs; indented ones (the multi-host sketch) are not.
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    assert blocks, "the README has no python example"
    with jax.numpy_dtype_promotion("standard"):  # a user's default, not our strict tests
        for block in blocks:
            namespace: dict = {}
            exec(compile(block, str(README), "exec"), namespace)
            if "opt_state" in namespace:
                import lrr_optax

                summary = lrr_optax.summarize(namespace["opt_state"])
                assert summary and all(jax.numpy.isfinite(v) for v in summary.values())
