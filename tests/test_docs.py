"""The repository stands alone: it cites its own docs/ pages (or the paper), never notes kept
outside it, and every docs/ page and docs/paper_notes.md anchor it cites exists.

Files are those git lists: tracked, plus untracked ones that are not ignored (a page or test not
yet committed counts).
"""

import functools
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# Built, not written out, so that this file does not match itself.
OUTSIDE_NOTES = ("PAPER" + ".md", "DESIGN" + ".md")
TEXT_SUFFIXES = (".py", ".md", ".ipynb")
NOTES = "docs/paper_notes.md"
# docs/<path>[#anchor], not inside a longer path or URL (…/docs/x is another project's page).
DOC_REF = re.compile(r"(?<![\w./-])(docs/[\w./<>*-]+)(?:#([\w-]+))?")
# In-page links of the notes: [text](#anchor).
LOCAL_ANCHOR = re.compile(r"\]\(#([\w-]+)\)")


@functools.lru_cache(maxsize=1)
def repo_files() -> tuple[str, ...]:
  try:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
        capture_output=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError) as e:
    pytest.skip(f"not a git checkout ({e})")
  return tuple(sorted(p for p in out.decode().split("\0") if p and (REPO / p).is_file()))


def text_files() -> list[str]:
  return [p for p in repo_files()
          if p.endswith(TEXT_SUFFIXES) or pathlib.PurePosixPath(p).name == "Makefile"]


def citations_in(text: str):
  """(line number, cited docs/ path, anchor or None) of each citation in `text`; templates such
  as docs/<page> are skipped and a sentence's final period is not part of the path."""
  for number, line in enumerate(text.splitlines(), 1):
    for m in DOC_REF.finditer(line):
      cited = m.group(1).rstrip(".")
      if not any(c in cited for c in "<>*"):
        yield number, cited, m.group(2)


def doc_citations() -> list[tuple[str, int, str, str | None]]:
  """(file, line, cited docs/ path, anchor or None) for every citation in the text files (a
  notebook is read as its JSON text, so line numbers are the file's)."""
  return [(path, *citation) for path in text_files()
          for citation in citations_in((REPO / path).read_text(encoding="utf-8"))]


def github_slug(heading: str) -> str:
  """GitHub's anchor of a heading: lowercase, punctuation but '-' and '_' dropped, spaces '-'."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
  """The anchors of every heading outside code fences (repeats get -1, -2, … as on GitHub)."""
  anchors, seen, fenced = set(), {}, False
  for line in markdown.splitlines():
    if line.lstrip().startswith("```"):
      fenced = not fenced
      continue
    m = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
    if m and not fenced:
      slug = github_slug(m.group(1))
      n = seen.get(slug, 0)
      seen[slug] = n + 1
      anchors.add(slug if n == 0 else f"{slug}-{n}")
  return anchors


def test_no_file_cites_notes_kept_outside_the_repository():
  found = []
  for path in repo_files():
    data = (REPO / path).read_bytes()
    for name in OUTSIDE_NOTES:
      if name.encode() in data:
        lines = [i for i, line in enumerate(data.split(b"\n"), 1) if name.encode() in line]
        found.append(f"{path}:{','.join(map(str, lines))}: {name}")
  assert not found, ("cite docs/paper_notes.md#<section> or the paper's own section instead of "
                     "files outside the repository:\n" + "\n".join(found))


def test_the_checks_see_the_citations():
  """The citation scan finds the notes' own citations (else the tests below check nothing)."""
  assert NOTES in repo_files()
  cited = {(p, c) for p, _, c, _ in doc_citations()}
  assert ("stability/model.py", NOTES) in cited
  d = "docs"  # not written out: the scan reads this file too
  text = f"see {d}/a.md#x-y.\n`{d}/<page>.md`, https://h/{d}/b.md, {d}/c"
  assert list(citations_in(text)) == [(1, f"{d}/a.md", "x-y"), (2, f"{d}/c", None)]
  assert github_slug("Choices where the paper is silent") == "choices-where-the-paper-is-silent"
  assert github_slug("Figs E.7-E.11, E.14: ablations") == "figs-e7-e11-e14-ablations"
  assert heading_anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_every_cited_docs_page_exists():
  files = set(repo_files())
  folders = {str(parent) for f in files for parent in pathlib.PurePosixPath(f).parents}
  missing = [f"{path}:{line}: {cited}" for path, line, cited, _ in doc_citations()
             if cited.rstrip("/") not in files | folders]
  assert not missing, "cited docs/ pages that are not in the repository:\n" + "\n".join(missing)


def test_every_cited_paper_notes_anchor_is_a_heading():
  notes = (REPO / NOTES).read_text(encoding="utf-8")
  anchors = heading_anchors(notes)
  bad = [f"{path}:{line}: #{anchor}" for path, line, cited, anchor in doc_citations()
         if cited == NOTES and anchor and anchor not in anchors]
  bad += [f"{NOTES}: #{anchor}" for anchor in LOCAL_ANCHOR.findall(notes) if anchor not in anchors]
  assert not bad, (f"anchors with no heading in {NOTES} (headings: {', '.join(sorted(anchors))}):\n"
                   + "\n".join(bad))
