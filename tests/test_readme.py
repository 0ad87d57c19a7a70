"""The README's measured figures are the benchmarks' saved output, rendered by bench/readme.py."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import readme  # noqa: E402


def test_every_figure_block_matches_its_saved_output():
    text = (ROOT / "README.md").read_text()
    blocks = list(readme.BLOCK.finditer(text))
    assert len(blocks) >= 4
    assert readme.main(["--check"]) == 0, "run: python bench/readme.py"


def test_a_typed_figure_is_caught(tmp_path):
    text = (ROOT / "README.md").read_text()
    spec = "posthoc-table posthoc-fashion-mnist.txt class0 ta,ra,fa,retained_ta,mia_auroc,pg,verdict"
    rendered = readme.render(spec)
    assert "| scrub | 83.3 | 94.2 | 0.0 | 92.5 | 53.7 | 8.4 | looks unseen |" in rendered  # the verdict's words
    tampered = tmp_path / "README.md"
    tampered.write_text(text.replace(rendered, rendered.replace("| 89.8 |", "| 0.5 |"), 1))
    assert readme.main(["--check", "--readme", str(tampered)]) == 1


def test_renderers_refuse_what_the_output_does_not_hold():
    with pytest.raises(ValueError, match="no table"):
        readme.posthoc_table("== other: x\nmethod ta\n", "class0", "ta")
    with pytest.raises(ValueError, match="not in the printed table"):
        readme.posthoc_table("== class0: x\nmethod ta\noracle 1.0\n", "class0", "fa")
