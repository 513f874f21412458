"""The README stays true to the code: the format table and the settings table come from it."""

from __future__ import annotations

import re
from pathlib import Path

from imaging.formats import OUTPUT_FORMATS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def section(name: str) -> str:
    match = re.search(rf"<!-- {name}:.*?-->(.*?)<!-- /{name} -->", README, re.S)
    assert match, f"README has no {name} section"
    return match.group(1)


def test_readme_format_table_is_the_registry() -> None:
    expected = [
        f"| `{f.name}` | {f.mime} | .{f.ext} | {'yes' if f.alpha else 'no'} | "
        f"{'yes' if f.animation else 'no'} | {f.default_quality or 'lossless'} |"
        for f in OUTPUT_FORMATS.values()
    ]
    rows = [line for line in section("formats-table").splitlines() if line.startswith("| `")]
    assert rows == expected


def test_readme_first_section_has_exactly_two_commands() -> None:
    first = README.split("## Get started", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", first, re.S)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]
