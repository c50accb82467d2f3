"""The docs describe the code as it is: the registry tables of docs/REGISTRY.md and the README
are the ones docs/gen_registry.py makes from the registries and recipes now; the README stays a
one-page overview (≤ 8 KB) whose Python quickstart runs as written; every relative link of the
README and docs/ points at a file that exists; and no text in the tree narrates how the project
was developed (that is CHANGELOG.md's job)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_the_registry_tables_are_generated_from_the_code_as_it_is_now():
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_registry.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_the_registry_check_catches_a_part_that_is_not_in_the_docs():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_registry
        from groupact.groups import GROUPS
        before = gen_registry.registry_md()
        GROUPS.register("zz-test-group", object, "a group only this test registers")
        try:
            assert gen_registry.registry_md() != before
            assert "zz-test-group" in gen_registry.registry_md()
        finally:
            GROUPS._entries.pop("zz-test-group")
    finally:
        sys.path.remove(str(ROOT / "docs"))


def test_the_readme_is_short():
    assert len(README.read_bytes()) <= 8192


def test_the_readme_python_quickstart_runs_as_written(tmp_path):
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Python\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 14
    (tmp_path / "pretrained").symlink_to(ROOT / "pretrained")
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    psnr = float(re.search(r"PSNR ([\d.]+) dB", out.stdout).group(1))
    assert psnr > 25.0                # the shipped C4 model turns digits (8.95 dB doing nothing)


def _docs() -> list[Path]:
    return [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_of_the_docs_points_at_a_file():
    broken = []
    for doc in _docs():
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)} → {target}")
    assert not broken, broken


#: how development was narrated: rounds of work and tracker numbers (what the code does and why
#: belongs in the text; when and in which round it changed belongs in CHANGELOG.md)
HISTORY = re.compile(r"\b(issue\s*#?\d+|(first|second|third|fourth|fifth|sixth|seventh|eighth|"
                     r"ninth|tenth|this|that|last|next|previous|earlier|later)\s+session|"
                     r"session\s*\d+|sessions?\s+notes|rounds?\s+of\s+(work|development))",
                     re.I)


def test_no_text_in_the_tree_narrates_rounds_of_development():
    roots = [README, ROOT / "docs", ROOT / "src", ROOT / "tests", ROOT / "benchmarks",
             ROOT / "pretrained", ROOT / "results"]
    hits = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path.suffix not in (".md", ".py", ".yaml", ".txt", ".html") or \
                    path == Path(__file__).resolve():
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                     .splitlines(), 1):
                if HISTORY.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
