"""The README and docs/ stay true: links resolve, commands parse, named files exist, figures match their source.

Fast and deterministic (no network, no router started): every relative link of README.md and docs/*.md
points at a file of the repository (and a ``#anchor`` at one of its headings, GitHub-style); every
``agi-router …``, ``loadtest/run …``, ``python -m loadtest.…`` and ``scripts/bootstrap.sh …`` command shown
in a shell block (and every ``agi-router …`` in inline code) parses with the real argparse parser; every
repository path named in backticks exists; the README's pictures are what ``docs/figures/make_figures.py``
writes; and the headline figures the README used to carry before the docs were split are all still there.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
README_MAX_LINES = 220

FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)\s*$")
SHELL_LANGS = {"sh", "bash", "console", "shell"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _split(text: str) -> tuple[list[tuple[str, str]], str]:
    """Fenced blocks as (language, body), and the prose with every fenced block blanked out."""
    blocks: list[tuple[str, str]] = []
    prose: list[str] = []
    lang: str | None = None
    body: list[str] = []
    for line in text.split("\n"):
        m = FENCE.match(line.strip())
        if lang is None and m:
            lang, body = m.group(2).lower(), []
            prose.append("")
        elif lang is not None and line.strip() in ("```", "~~~"):
            blocks.append((lang, "\n".join(body)))
            lang = None
            prose.append("")
        elif lang is not None:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    return blocks, "\n".join(prose)


INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)


def _inline_code(prose: str) -> list[str]:
    return [m.group(2).strip() for m in INLINE_CODE.finditer(prose)]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    _, prose = _split(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in prose.split("\n"):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(path: Path) -> Iterator[str]:
    _, prose = _split(path.read_text(encoding="utf-8"))
    prose = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose)
    for m in LINK.finditer(prose):
        yield m.group(1)
    for m in re.finditer(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", prose):
        yield m.group(1)


def _page_id(path: Path) -> str:
    return _rel(path)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {_rel(dest)}")
    assert not problems, f"{_rel(page)}: " + "; ".join(problems)


def test_the_pages_link_to_each_other() -> None:
    """Every docs page is reachable from the README's map."""
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md") if not t.startswith("#")}
    orphans = [_rel(p) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not orphans, f"docs pages missing from the README's map: {orphans}"


def test_readme_is_short() -> None:
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail into docs/ (limit {README_MAX_LINES})"


# ---------------------------------------------------------------------------------------------- commands


class _Parsed(Exception):
    pass


class _Refused(Exception):
    pass


def _parse_only(main: Callable[[list[str]], object], argv: list[str], *, mention: bool = False) -> None:
    """Run ``main(argv)`` up to the end of argument parsing, never further.

    ``mention``: a command named in running text (`agi-router speech eval`) may leave out its required
    arguments; its subcommands and options must still exist.
    """
    original_parse, original_error = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.error

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        original_parse(self, args, namespace)
        raise _Parsed

    def error(self, message):  # type: ignore[no-untyped-def]
        raise _Refused(message)

    argparse.ArgumentParser.parse_args = parse_args  # type: ignore[method-assign]
    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        main(argv)
    except _Parsed:
        return
    except _Refused as exc:
        if mention and str(exc).startswith("the following arguments are required"):
            return
        raise AssertionError(f"does not parse: {exc}") from None
    except SystemExit as exc:  # after --help
        if exc.code not in (0, None):
            raise AssertionError(f"does not parse (exit status {exc.code})") from None
        return
    finally:
        argparse.ArgumentParser.parse_args = original_parse  # type: ignore[method-assign]
        argparse.ArgumentParser.error = original_error  # type: ignore[method-assign]
    raise AssertionError("main() returned without parsing its arguments")


def _main_of(module: str) -> Callable[[list[str]], object]:
    return importlib.import_module(module).main  # type: ignore[no-any-return]


def _normalise(text: str) -> str:
    """Placeholders as plain words: ``<x>`` → ``x``, ``Q[:PENALTY]`` → ``Q``, ``[DIR]`` → ``DIR``."""
    text = re.sub(r"<([^<>\s]+)>", r"\1", text)
    text = re.sub(r"(\w)\[[^\]\s]*\]", r"\1", text)
    return re.sub(r"\[([^\]]*)\]", r"\1", text)


def _commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line (split on | && || ;), comments dropped."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    out: list[list[str]] = [[]]
    for tok in lex:
        if tok in ("|", "||", "&&", ";", "&"):
            out.append([])
        else:
            out[-1].append(tok)
    return [c for c in out if c]


def _strip_env(cmd: list[str]) -> list[str]:
    while cmd and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0]):
        cmd = cmd[1:]
    return cmd


def _check(cmd: list[str], mention: bool = False) -> str | None:
    """Which program this command runs, once its arguments were checked; None when it is not ours."""
    cmd = _strip_env(cmd)
    if not cmd:
        return None
    prog = cmd[0]
    if prog.endswith("agi-router"):
        _parse_only(_main_of("agi_router.cli"), cmd[1:], mention=mention)
        return "agi-router"
    if prog.endswith("loadtest/run"):
        _parse_only(_main_of("loadtest.run"), cmd[1:], mention=mention)
        return "loadtest/run"
    if re.search(r"(^|/)python3?$", prog) and cmd[1:2] == ["-m"] and len(cmd) > 2:
        module = cmd[2]
        if module == "agi_router":
            _parse_only(_main_of("agi_router.cli"), cmd[3:], mention=mention)
            return module
        if module.startswith("loadtest."):
            _parse_only(_main_of(module), cmd[3:], mention=mention)
            return module
        return None
    if prog.endswith("scripts/bootstrap.sh"):
        usage = re.search(r'case "\$mode" in ([\w|]+)\)', (ROOT / "scripts/bootstrap.sh").read_text())
        assert usage, "scripts/bootstrap.sh: its usage line moved"
        assert cmd[1:2] and cmd[1] in usage.group(1).split("|"), f"bootstrap.sh takes {usage.group(1)}"
        return "bootstrap.sh"
    return None


OURS = re.compile(r"agi-router|loadtest|bootstrap\.sh")
MENTIONED = re.compile(
    r"^((\.venv/bin/)?agi-router|loadtest/run|(\.venv/bin/)?python3? -m (agi_router|loadtest\.\w+))(\s|$)"
)


def _shown_commands() -> Iterator[tuple[str, str, bool]]:
    for page in PAGES:
        blocks, prose = _split(page.read_text(encoding="utf-8"))
        for lang, body in blocks:
            if lang not in SHELL_LANGS:
                continue
            for line in body.split("\n"):
                line = re.sub(r"^\s*\$\s+", "", line)  # a console prompt
                if OURS.search(line) and re.match(r"^\s*[\w./$A-Z_=-]", line):
                    if line.lstrip().startswith(("{", "[", '"')):  # output, not a command
                        continue
                    yield _rel(page), line.strip(), False
        for code in _inline_code(prose):
            if MENTIONED.match(code) and "…" not in code:
                yield _rel(page), _normalise(code), True


SHOWN = list(_shown_commands())


def test_the_docs_show_commands() -> None:
    assert len(SHOWN) >= 20, SHOWN  # the extraction itself still finds them


@pytest.mark.parametrize(("page", "line", "mention"), SHOWN, ids=[f"{p}: {c[:60]}" for p, c, _ in SHOWN])
def test_every_command_shown_parses(page: str, line: str, mention: bool) -> None:
    """Shell blocks must parse as given; inline mentions may leave out required arguments."""
    try:
        commands = _commands(line)
    except ValueError as exc:
        pytest.fail(f"{page}: cannot split {line!r}: {exc}")
    ran = []
    for cmd in commands:
        try:
            ran.append(_check(cmd, mention))
        except AssertionError as exc:
            pytest.fail(f"{page}: {line!r}: {exc}")
    assert any(ran), f"{page}: {line!r} names one of our commands but none was recognised"


# ------------------------------------------------------------------------------------------ named files

TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") or p.name == ".ci"}
NOT_IN_GIT = ("var/", "loadtest/reports/", "build/")  # made at run time, git-ignored
PATHLIKE = re.compile(r"^[\w.-]+(/[\w.*-]+)+/?$")


def _exists(base: Path, rel: str) -> bool:
    return any(base.glob(rel)) if "*" in rel else (base / rel).exists()


def _named_paths() -> Iterator[tuple[str, str]]:
    for page in PAGES:
        _, prose = _split(page.read_text(encoding="utf-8"))
        for code in _inline_code(prose):
            if PATHLIKE.match(code) and not code.startswith(NOT_IN_GIT):
                yield _rel(page), code
            elif re.match(r"^(test_\w+|bench_\w+)\.py$", code):
                yield _rel(page), code


NAMED = sorted(set(_named_paths()))


def test_the_docs_name_files() -> None:
    assert len(NAMED) >= 50


@pytest.mark.parametrize(("page", "path"), NAMED, ids=[f"{p}: {c}" for p, c in NAMED])
def test_every_named_repository_path_exists(page: str, path: str) -> None:
    if path.startswith("test_"):
        assert any((ROOT / "tests").rglob(path)), f"{page}: `{path}`: no such test module under tests/"
        return
    if path.startswith("bench_"):
        assert (ROOT / "benchmarks" / path).exists(), f"{page}: `{path}`: not in benchmarks/"
        return
    head = path.split("/")[0]
    # a path from the repository's root, or from the package (`speech/turn.py`), or from monitoring/
    for base in (ROOT, ROOT / "agi_router", ROOT / "monitoring"):
        if (base / head).is_dir() and (base is not ROOT or head in TOP):
            assert _exists(base, path.rstrip("/")), f"{page}: `{path}`: no such file under {_rel(base) or '.'}"
            return
    # not a repository path (e.g. a prompt id like router/callback-offer, or Asterisk's sounds/fr)


# -------------------------------------------------------------------------------------------- pictures


FIGURES = ("call.svg", "architecture.svg")


def _texts(svg: bytes) -> list[str]:
    return re.findall(r"<text[^>]*>(.*?)</text>", svg.decode("utf-8"), re.S)


def test_the_pictures_are_what_their_source_draws(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    subprocess.run(
        [sys.executable, str(DOCS / "figures" / "make_figures.py"), str(tmp_path)], check=True, timeout=120, cwd=ROOT
    )
    fix = "run .venv/bin/python docs/figures/make_figures.py and commit docs/figures/*.svg"
    for name in FIGURES:
        committed = (DOCS / "figures" / name).read_bytes()
        fresh = (tmp_path / name).read_bytes()
        assert _texts(fresh) == _texts(committed), f"{name}: its words differ from its source: {fix}"
        made_with = re.search(rb"Matplotlib v([\w.]+)", committed)
        if made_with and made_with.group(1).decode() != matplotlib.__version__:
            continue  # another matplotlib writes other bytes; the words were checked above
        assert fresh == committed, f"docs/figures/{name} differs from what its source draws: {fix}"


def test_the_pictures_are_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    script = str(DOCS / "figures" / "make_figures.py")
    for out in ("a", "b"):
        subprocess.run([sys.executable, script, str(tmp_path / out)], check=True, timeout=120, cwd=ROOT)
    for name in FIGURES:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
        assert b"<dc:date>" not in a, "a date in the SVG's metadata"


# ------------------------------------------------------------------------ nothing lost in the split

# Headline figures of the README as it was before it was split into docs/ (issue #24): each must still be
# stated somewhere in README.md or docs/. (The full check — every number with a unit, section by section —
# was run once when the docs were split.)
HEADLINE_FIGURES = [  # ranges are written with "-" here; the docs' en dashes are read as "-"
    "7.4 µs",  # decision core p50
    "16.7 µs",  # decision core p99
    "67 µs",  # decision core p99.9
    "18.5-19.3 %",  # WER on real human French
    "202-208 ms",  # its recognition p50
    "3 of 275",  # wrong deflections, held-out sentences
    "87 %",  # right queue first time
    "31.8-31.9 s",  # a silent caller reaches a person
    "1.50-1.51 s",  # dead air after SIGKILL (kill at 2.5 s)
    "1.80-1.81 s",  # dead air after SIGKILL (kill at 2.2 s)
    "0.27, 0.19 s",  # load test, peak: speech -> route p50
    "1.39, 1.30 s",  # load test, peak: p99
    "13.9-14.4",  # recogniser utterances/s, 2 processes, batch 4
    "1.04 [1.02, 1.05]",  # FastAGI CPU per session, ours / panoramisk's (asyncio)
    "1.12 [1.10, 1.15]",  # the same on uvloop
    "0.153 / 0.156 / 0.157 s",  # the SIP edge: time to ban
    "0.89 / 1.33 / 1.69 s",  # Asterisk CPU without the edge
    "0.97-0.98 s",  # the dispatcher: a node lost, detected
    "0.4 / 0.6 / 0.8 ms",  # the dispatcher's CPU per call
    "12,264 → 10,268",  # the synthetic weekday: callers who reached nobody
    "45.6-48.0 s",  # its replay time
    "54 s and 104 MB",  # a 2.3 million-row directory import
    "58 passed in 11 min 12 s",  # the real-Asterisk suite's last run
]


def test_the_headline_figures_are_still_stated() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    text = re.sub(r"\s+", " ", text).replace("\u2013", "-")
    missing = [f for f in HEADLINE_FIGURES if f not in text]
    assert not missing, f"figures no longer stated in README.md or docs/: {missing}"
