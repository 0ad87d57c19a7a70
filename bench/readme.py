"""Write the README's measured figures from the benchmarks' saved output, never by hand.

    python bench/readme.py            # rewrite every figure block of README.md from bench/results/
    python bench/readme.py --check    # exit 1 naming each block that differs from its source (a test runs this)

A figure block sits between ``<!-- bench:RENDERER FILE [ARGS] -->`` and ``<!-- /bench -->``; FILE is a file in
``bench/results/`` that a benchmark printed (its command is at the top of the block's section), and the
renderer picks what the README shows:

- ``posthoc-table FILE REQUEST COLUMNS``: the table ``bench/posthoc.py`` printed for REQUEST (``== REQUEST:``),
  with the comma-separated COLUMNS, as a Markdown table;
- ``damp-variants FILE``: the per-class DAMP summary of ``bench/posthoc.py``'s JSON line;
- ``lines FILE PREFIX[|PREFIX...]``: the output lines starting with one of the prefixes (``+`` for a space), as
  a code block;
- ``json FILE KEY[,KEY...]``: keys of the file's last JSON line, as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BLOCK = re.compile(r"(<!-- bench:(?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /bench -->)", re.S)
LABELS = {"ta": "TA", "ra": "RA", "fa": "FA", "retained_ta": "retained-class TA", "mia_auroc": "MIA AUROC",
          "pg": "PG", "selectivity": "selectivity", "verdict": "verdict", "time_s": "time (s)", "speedup": "speedup"}

# bench/posthoc.py prints a verdict as one column, its words joined by "-"
VERDICTS = {"looks-unseen": "looks unseen", "not-forgotten": "not forgotten"}


def last_json(text: str) -> dict:
    """The last line of ``text`` that parses as a JSON object."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line")


def posthoc_table(text: str, request: str, columns: str) -> str:
    """The printed table of one request, as Markdown with the chosen columns."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"== {request}:")), None)
    if start is None:
        raise ValueError(f"no table for {request!r}")
    header = lines[start + 1].split()
    wanted = columns.split(",")
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ValueError(f"columns {missing} not in the printed table ({', '.join(header[1:])})")
    out = ["| method | " + " | ".join(LABELS.get(c, c) for c in wanted) + " |", "|---" * (len(wanted) + 1) + "|"]
    for line in lines[start + 2:]:
        cells = line.split()
        if len(cells) != len(header):
            break
        row = dict(zip(header, cells))
        out.append(f"| {row['method']} | " + " | ".join(VERDICTS.get(row[c], row[c]) for c in wanted) + " |")
    return "\n".join(out)


def damp_variants(text: str) -> str:
    variants = last_json(text)["damp_variants"]
    out = ["| DAMP form | median FA over single classes | worst FA | worst retained-class drop (points) |",
           "|---|---|---|---|"]
    for name, v in variants.items():
        label = "damp (the paper's form)" if name == "default" else name
        out.append(f"| {label} | {v['median_fa']:.1f} | {v['worst_fa']:.1f} | {v['worst_retained_drop']:.2f} |")
    return "\n".join(out)


def output_lines(text: str, prefixes: str) -> str:
    keep = tuple(prefixes.replace("+", " ").split("|"))
    return "```\n" + "\n".join(line for line in text.splitlines() if line.startswith(keep)) + "\n```"


def json_table(text: str, keys: str) -> str:
    data = last_json(text)
    rows = [f"| `{k}` | {json.dumps(data.get(k))} |" for k in keys.split(",")]
    return "\n".join(["| | measured |", "|---|---|", *rows])


RENDERERS = {"posthoc-table": posthoc_table, "damp-variants": damp_variants, "lines": output_lines,
             "json": json_table}


def render(spec: str) -> str:
    renderer, name, *args = spec.split()
    text = (RESULTS / name).read_text()
    return RENDERERS[renderer](text, *args) + "\n"


def rewrite(readme: str) -> tuple[str, list[str]]:
    """README text with every block rendered again, and the specs of the blocks that changed."""
    changed = []

    def one(match: re.Match) -> str:
        body = render(match["spec"])
        if body != match["body"]:
            changed.append(match["spec"])
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(one, readme), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only say which blocks are stale; exit 1 if any")
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    args = ap.parse_args(argv)
    path = Path(args.readme)
    text, changed = rewrite(path.read_text())
    if args.check:
        for spec in changed:
            print(f"stale: <!-- bench:{spec} --> differs from bench/results (run python bench/readme.py)")
        return 1 if changed else 0
    path.write_text(text)
    print(f"{len(changed)} block(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
