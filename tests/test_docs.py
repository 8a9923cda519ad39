"""Every Python code block of README.md and docs/*.md runs, as written.

How blocks are run:

* Each ```` ```python ```` block runs in a fresh namespace, so a block a newcomer copies
  on its own has its imports, data and model in it.
* Exception: a page written as a continuing story marks a block that uses the names of
  the block before it with the HTML comment `<!-- docs-test: continues -->` on a line
  of its own before the fence (invisible on the rendered page; the prose says
  "continuing the example above"). Such a chain of blocks runs in order in one
  namespace, as one test.
* A block meant to show an error catches it itself and checks its type, so it is
  executed like any other.
* ```` ```bash ```` and plain ```` ``` ```` blocks are not run (CI runs the README's
  quick-start commands itself).

Each run happens in a temporary working directory (blocks may write files, e.g.
checkpoints), with matplotlib's Agg backend, and restores the global state a block
may change (the solver registry, `jax_enable_x64`). Tracebacks point at the
Markdown file and line.

The docs site's navigation (mkdocs.yml) and the pages in docs/ must match, and the API
reference (docs/api.md) must list every public class and function.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import jax
import pytest
from test_docstrings import PUBLIC

from statefulnlp import traits

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONTINUES = "<!-- docs-test: continues -->"
FENCE_OPEN = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    page: Path
    index: int  # among the page's python blocks, from 0
    line: int  # 1-based line of the first code line in the page
    code: str
    continues: bool  # marked as using the names of the previous python block


def python_blocks(page: Path) -> list[Block]:
    """The ```python blocks of a Markdown page, with their position and marker."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    marker = False
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = FENCE_OPEN.match(line)
        if line.strip() == CONTINUES:
            marker = True
        elif opening:
            fence, indent = opening["fence"], len(opening["indent"])
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i][indent:])
                i += 1
            if opening["lang"] in ("python", "py"):
                start = i - len(body) + 1  # 1-based line of the first code line
                code = "\n".join(body) + "\n"
                blocks.append(Block(page, len(blocks), start, code, marker))
            elif marker:
                raise AssertionError(f"{page.name}: {CONTINUES} before a non-python block")
            marker = False
        elif line.strip() and marker:
            # only blank lines may separate the marker from its block
            raise AssertionError(f"{page.name}:{i + 1}: {CONTINUES} not followed by a block")
        i += 1
    if blocks and blocks[0].continues:
        raise AssertionError(f"{page.name}: the first python block cannot continue another")
    return blocks


def runs() -> list[tuple[Block, ...]]:
    """Chains of blocks that run in one namespace (most chains are one block)."""
    chains: list[tuple[Block, ...]] = []
    for page in PAGES:
        for block in python_blocks(page):
            if block.continues:
                chains[-1] = (*chains[-1], block)
            else:
                chains.append((block,))
    return chains


def _id(chain: tuple[Block, ...]) -> str:
    page = chain[0].page.relative_to(ROOT).as_posix()
    indices = str(chain[0].index)
    if len(chain) > 1:
        indices += f"-{chain[-1].index}"
    return f"{page}:{indices}"


RUNS = runs()


def test_blocks_found():
    # The extraction itself: the pages this test exists for have python blocks.
    ids = {_id(chain).split(":")[0] for chain in RUNS}
    assert {"README.md", "docs/getting-started.md", "docs/state-policies.md"} <= ids


@pytest.mark.parametrize("chain", RUNS, ids=[_id(chain) for chain in RUNS])
def test_code_block_runs(chain, tmp_path, monkeypatch):
    if any("from flax" in b.code or "import flax" in b.code for b in chain):
        pytest.importorskip("flax")  # an optional extra (installed with [dev])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # A real module, so that dataclasses (equinox modules) defined in a block resolve.
    module = types.ModuleType("_docs_block")
    sys.modules[module.__name__] = module
    registry = dict(traits._REGISTRY)  # a block may register a solver of its own
    x64 = jax.config.read("jax_enable_x64")
    try:
        for block in chain:
            # Pad so that line numbers in a traceback are those of the Markdown file.
            source = "\n" * (block.line - 1) + block.code
            exec(compile(source, str(block.page), "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
        traits._REGISTRY.clear()
        traits._REGISTRY.update(registry)
        jax.config.update("jax_enable_x64", x64)


def _nav_pages(mkdocs_yml: str) -> list[str]:
    """The .md files named in mkdocs.yml's `nav:` section (a flat or nested list)."""
    pages, inside = [], False
    for line in mkdocs_yml.splitlines():
        if re.match(r"^nav:\s*$", line):
            inside = True
        elif inside and line.strip() and not line.startswith((" ", "-")):
            break  # the next top-level key
        elif inside:
            found = re.search(r"([\w./-]+\.md)\s*$", line)
            if found:
                pages.append(found.group(1))
    return pages


def test_docs_nav_lists_every_page():
    nav = _nav_pages((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    on_disk = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    missing = sorted(set(nav) - set(on_disk))
    unlisted = sorted(set(on_disk) - set(nav))
    assert not missing, f"mkdocs.yml nav names pages that do not exist: {missing}"
    assert not unlisted, f"pages in docs/ missing from mkdocs.yml's nav: {unlisted}"
    assert len(nav) == len(set(nav)), "a page is listed twice in mkdocs.yml's nav"


def _resolve(dotted: str):
    module_name, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return importlib.import_module(dotted)


def test_api_reference_lists_every_public_object():
    # Every public class and function (those whose docstring examples test_docstrings
    # runs) has an entry in docs/api.md, directly or as a member of a module entry.
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set()
    for entry in re.findall(r"^::: *(\S+)", api, re.M):
        obj = _resolve(entry)
        documented.add(id(obj))
        if isinstance(obj, types.ModuleType):
            documented |= {id(getattr(obj, n)) for n in getattr(obj, "__all__", ())}
    missing = sorted(name for name, obj in PUBLIC.items() if id(obj) not in documented)
    assert not missing, f"public objects missing from docs/api.md: {missing}"


def test_marker_parsing(tmp_path):
    # The chaining rule above, on a page written for the purpose.
    page = tmp_path / "page.md"
    page.write_text(
        "```python\na = 1\n```\n\ntext\n\n"
        f"{CONTINUES}\n\n```python\nassert a == 1\n```\n\n"
        "```bash\necho no\n```\n\n```python\nb = 2\n```\n",
        encoding="utf-8",
    )
    blocks = python_blocks(page)
    assert [(b.index, b.line, b.continues) for b in blocks] == [
        (0, 2, False),
        (1, 10, True),
        (2, 18, False),
    ]
    assert blocks[1].code == "assert a == 1\n"
