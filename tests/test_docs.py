"""The README and docs/ stay true to the code.

The format table comes from the registry; every link and anchor, every ``make``, ``python -m``
and ``flask`` command, every ``METHOD /path``, curl path and setting they name must exist. Each
check is a function returning its problems, and each has a test that feeds it a broken example,
so none can pass by finding nothing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
from flask import Flask

from imaging.config import Settings
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


# -- the documents -------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_IDS = [str(p.relative_to(ROOT)) for p in DOCS]

#: The app specs the docs may give ``flask --app``: both build the app with ``create_app()``.
APP_SPECS = {"cloud_image_app", "cloud_image_app:create_app()"}

#: UPPER_CASE names in the docs that are neither a setting nor gunicorn's, each with its owner.
OTHER_VARIABLES = {
    "K_SERVICE": "set by Cloud Run; the app reads it to know where it runs",
    "GOOGLE_APPLICATION_CREDENTIALS": "Application Default Credentials' key file",
    "STORAGE_EMULATOR_HOST": "google-cloud-storage's emulator switch",
    "VIPS_CONCURRENCY": "libvips' thread count, in the benchmarks",
    "RECORD_FIGURES": "tests/test_load.py writes its table there",
    "PEERS_CACHE_DIR": "where benchmarks/peers.py installs thumbor and sharp",
    "PEERS_ARGS": "make bench-peers' arguments to benchmarks/peers.py",
    "COMMIT_SHA": "a Cloud Build substitution",
    "MAX_FORM_MEMORY_SIZE": "Flask's limit on a form field, set in cloud_image_app.py",
    "VERY_LIKELY": "a SafeSearch likelihood (a value)",
    "OBJECT_FINALIZE": "a Cloud Storage notification's event type (a value)",
}

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")
NAME = r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"  # env-var-looking: upper case with an underscore


def read(path: Path) -> str:
    return path.read_text()


def split_fences(text: str) -> tuple[str, list[str]]:
    """The prose (fenced blocks blanked out, so line numbers stay) and the fenced blocks."""
    prose: list[str] = []
    blocks: list[str] = []
    block: list[str] = []
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            if fence:
                blocks.append("\n".join(block))
                block = []
            fence = not fence
            prose.append("")
        elif fence:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", split_fences(text)[0])


def code_lines(text: str) -> Iterator[str]:
    """Every command line of every fenced block (continuations joined, comments dropped), then
    every inline code span."""
    for block in split_fences(text)[1]:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"^\$ ", "", line.strip())
            if not line.startswith("#"):
                yield re.sub(r"\s+#\s.*$", "", line)
    yield from code_spans(text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; GitHub numbers repeats: x, x-1, x-2."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", split_fences(text)[0], re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


# -- the checks: each returns its problems -------------------------------------------------------


def link_problems(path: Path, text: str) -> list[str]:
    problems = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", split_fences(text)[0]):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve()
        if not file_part:  # an anchor in this very document
            if anchor not in anchors(text):
                problems.append(f"{target}: no heading #{anchor} in {path.name}")
        elif not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(read(linked))):
            problems.append(f"{target}: no heading #{anchor} in {linked.name}")
    return problems


def make_targets() -> set[str]:
    makefile = read(ROOT / "Makefile")
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", makefile, re.M))


def make_problems(text: str) -> list[str]:
    targets = make_targets()
    return [
        f"make {target}: no such target in the Makefile"
        for line in code_lines(text)
        for target in re.findall(r"(?:^|[\s;&|(])make\s+([a-z][\w-]*)", line)
        if target not in targets
    ]


def module_problems(text: str) -> list[str]:
    problems = []
    for line in code_lines(text):
        for module in re.findall(r"python[\d.]*\s+-m\s+([\w.]+)", line):
            top = importlib.util.find_spec(module.split(".")[0])
            here = top is not None and top.origin is not None and ROOT in Path(top.origin).parents
            if not here or importlib.util.find_spec(module) is None:
                problems.append(f"python -m {module}: no such module in the repository")
    return problems


def cli_problems(text: str, cli: click.Group) -> list[str]:
    problems = []
    command = r"(?:^|[\s;&|(])flask\s+(?:--app[\s=]+(\S+)\s+)?([a-z][\w-]*)(?:\s+([a-z][\w-]*))?"
    for line in code_lines(text):
        for spec, name, sub in re.findall(command, line):
            if spec and spec.strip("'\"") not in APP_SPECS:
                problems.append(f"flask --app {spec}: not how the app is built")
            found = cli.commands.get(name)
            if found is None:
                problems.append(f"flask {name}: no such command")
            elif isinstance(found, click.Group) and sub not in found.commands:
                problems.append(f"flask {name} {sub}: no such command")
    return problems


def route_problem(app: Flask, method: str, path: str) -> str | None:
    adapter = app.url_map.bind("docs.invalid")
    concrete = re.sub(r"<[^>]*>", "x", path.split("?", 1)[0])
    try:
        adapter.match(concrete, method=method)
    except Exception as exc:  # NotFound, MethodNotAllowed, RequestRedirect: not this route
        return f"{method} {path}: no such route ({type(exc).__name__})"
    return None


def route_problems(text: str, app: Flask) -> list[str]:
    """Every `METHOD /path` the docs name (the API tables and the prose alike)."""
    methods = "|".join(HTTP_METHODS)
    named = [
        match
        for span in code_spans(text)
        for match in re.findall(rf"(?:^|, )({methods}) (/\S*)", span)
    ]
    return [p for method, path in named if (p := route_problem(app, method, path))]


def curl_request(line: str) -> tuple[str, str] | None:
    """(method, path) of a curl command, or None when its URL is a variable with no path."""
    words = shlex.split(line)
    method = "GET"
    if any(w in ("-F", "-d", "--data", "--data-binary", "--form") for w in words):
        method = "POST"
    if "-X" in words:
        method = words[words.index("-X") + 1]
    urls = [w for w in words[1:] if "://" in w or w.startswith("$")]
    assert urls, f"a curl command without a URL: {line}"
    url = urls[-1]
    if "://" in url:
        path = urlsplit(url).path
    else:  # "$URL/readyz": a base URL and a path; "$URL" alone: a URL the app handed out
        rest = url.partition("/")[2]
        path = "/" + rest if rest else ""
    return (method, path) if path else None


def curl_problems(text: str, app: Flask) -> list[str]:
    problems = []
    for line in code_lines(text):
        if line.startswith("curl "):
            request = curl_request(line)
            if request and (problem := route_problem(app, *request)):
                problems.append(f"curl: {problem}")
    return problems


def known_variables() -> set[str]:
    internal = {"presets", "testing", "on_cloud_run", "upload_tokens"}
    settings = {f.name.upper() for f in dataclasses.fields(Settings) if f.name not in internal}
    gunicorn = read(ROOT / "gunicorn.conf.py")
    reader = r'(?:_\w+_env\(|os\.environ(?:\.get\(|\.setdefault\(|\[))"(\w+)"'
    read_there = re.findall(reader, gunicorn)
    return settings | {"UPLOAD_TOKEN"} | set(read_there)


def setting_problems(text: str) -> list[str]:
    """UPPER_CASE names in a settings context: a settings table's first column, an environment
    a command line or a deploy sets, an inline `NAME` or `NAME=value`."""
    known = known_variables() | set(OTHER_VARIABLES)
    prose = split_fences(text)[0]
    named: list[str] = []
    header = ""
    for line in prose.splitlines():
        if not line.startswith("|"):
            header = ""
        elif not header:
            header = line
        elif re.match(r"\|\s*variable\s*\|", header) and not line.startswith("|-"):
            named += re.findall(r"^\|\s*`([A-Z][A-Z0-9_]*)`", line)
    for span in code_spans(text):
        named += re.findall(rf"^({NAME})(?:=|$)", span)
        named += re.findall(r"^([A-Z][A-Z0-9_]*)=", span)
    for line in code_lines(text):
        for flag in re.findall(r"--(?:set|update)-env-vars=(\S+)", line):
            flag = flag.strip("'\"")
            separator = ","
            if escaped := re.match(r"\^(.)\^", flag):
                separator, flag = escaped.group(1), flag[3:]
            named += [pair.partition("=")[0] for pair in flag.split(separator) if pair]
        prefix = re.match(r"^((?:[A-Z][A-Z0-9_]*=\S*\s+)+)(?:make|flask|gunicorn|python)\b", line)
        if prefix:
            named += re.findall(r"([A-Z][A-Z0-9_]*)=", prefix.group(1))
    return [f"{name}: not a setting" for name in dict.fromkeys(named) if name not in known]


# -- the checks on the real docs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    from cloud_image_app import create_app

    root = tmp_path_factory.mktemp("docs-app")
    settings = Settings(
        media_root=root / "media",
        model_cache_dir=root / "models",
        labeler="none",
        secret_key="test-secret",
        testing=True,
    ).validated()
    return create_app(settings)


def test_the_docs_are_found() -> None:
    names = {p.name for p in DOCS}
    assert {"README.md", "architecture.md", "deploy.md", "operations.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_every_link_and_anchor_exists(path: Path) -> None:
    assert link_problems(path, read(path)) == []


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_every_make_command_is_a_makefile_target(path: Path) -> None:
    assert make_problems(read(path)) == []


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_every_python_m_names_a_module_of_the_repository(path: Path) -> None:
    assert module_problems(read(path)) == []


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_every_flask_command_is_registered(path: Path, docs_app: Flask) -> None:
    assert cli_problems(read(path), docs_app.cli) == []


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_every_method_and_path_named_is_a_route(path: Path, docs_app: Flask) -> None:
    assert route_problems(read(path), docs_app) == []


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_every_curl_example_requests_a_route(path: Path, docs_app: Flask) -> None:
    assert curl_problems(read(path), docs_app) == []


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_every_variable_named_as_a_setting_is_one(path: Path) -> None:
    assert setting_problems(read(path)) == []


# -- each check finds what it is for --------------------------------------------------------------

DOC = ROOT / "docs" / "operations.md"


def test_a_link_to_a_missing_file_is_found() -> None:
    assert link_problems(DOC, "See [deploy](deploy.md) and [gone](nowhere.md).\n") == [
        "nowhere.md: no such file"
    ]


def test_an_anchor_without_its_heading_is_found() -> None:
    text = "# Top\n\n## Sweeping `flask gc`: leftovers\n\n[a](#sweeping-flask-gc-leftovers)\n"
    assert link_problems(DOC, text) == []
    assert link_problems(DOC, text + "[b](#nowhere) [c](deploy.md#nowhere)\n") == [
        "#nowhere: no heading #nowhere in operations.md",
        "deploy.md#nowhere: no heading #nowhere in deploy.md",
    ]


def test_headings_inside_code_blocks_are_not_anchors() -> None:
    text = "# Top\n\n```sh\n# Not a heading\n```\n"
    assert anchors(text) == {"top"}


def test_repeated_headings_are_numbered_like_github() -> None:
    assert anchors("## API\n\n## API\n\n## API\n") == {"api", "api-1", "api-2"}


def test_an_anchor_into_another_doc_must_be_one_of_its_headings() -> None:
    assert link_problems(DOC, "[settings](configuration.md)\n") == []
    assert link_problems(DOC, "[one](configuration.md#no-such-heading)\n") == [
        "configuration.md#no-such-heading: no heading #no-such-heading in configuration.md"
    ]


def test_a_make_target_that_does_not_exist_is_found() -> None:
    text = "Run `make run`, then\n\n```sh\nmake deploy   # make test\n```\n"
    assert make_problems(text) == ["make deploy: no such target in the Makefile"]


def test_a_python_module_outside_the_repository_is_found() -> None:
    text = "`python -m benchmarks.engine` and `python -m benchmarks.nothing`; `python -m json.tool`"
    assert module_problems(text) == [
        "python -m benchmarks.nothing: no such module in the repository",
        "python -m json.tool: no such module in the repository",
    ]


def test_an_unregistered_flask_command_is_found(docs_app: Flask) -> None:
    text = (
        "```sh\nflask --app cloud_image_app gc\n"
        "flask --app 'cloud_image_app:create_app()' uploads sweep\n```\n"
        "Then `flask purge`, `flask uploads clean` and `flask --app app gc`.\n"
    )
    assert cli_problems(text, docs_app.cli) == [
        "flask purge: no such command",
        "flask uploads clean: no such command",
        "flask --app app: not how the app is built",
    ]


def test_a_method_and_path_that_is_not_a_route_is_found(docs_app: Flask) -> None:
    text = (
        "| `GET /api/images?limit=` | ok |\n| `DELETE /api/images/<id>` | ok |\n"
        "| `GET /healthz`, `POST /healthz` | one wrong |\n| `GET /api/nothing` | wrong |\n"
    )
    assert route_problems(text, docs_app) == [
        "POST /healthz: no such route (MethodNotAllowed)",
        "GET /api/nothing: no such route (NotFound)",
    ]


def test_a_curl_example_to_a_missing_path_is_found(docs_app: Flask) -> None:
    text = (
        "```console\n$ curl -F image=@a.jpg http://127.0.0.1:8080/api/images\n"
        '$ curl -s "$URL/readyz"\n$ curl -s -X PUT "$URL" --data-binary @a.png\n'
        "$ curl -F image=@a.jpg http://127.0.0.1:8080/api/image\n"
        "$ curl -s http://127.0.0.1:8080/convert\n```\n"
    )
    assert curl_problems(text, docs_app) == [
        "curl: POST /api/image: no such route (NotFound)",
        "curl: GET /convert: no such route (MethodNotAllowed)",
    ]


def test_a_variable_that_is_not_a_setting_is_found() -> None:
    text = (
        "| variable | default | meaning |\n|---|---|---|\n| `MAX_UPLOAD_MB` | `20` | |\n"
        "| `MAX_UPLOADS_MB` | | |\n\nSet `LABELER=vision`, `GUNICORN_THREADS` or `LABELLER=none`;\n"
        "`MAX_PIXEL` too.\n\n| field | meaning |\n|---|---|\n| `NOT_CHECKED=1` | a log field |\n\n"
        "```bash\nSTORAGE_BACKEND=gcs GCS_BUKET=b make run\n"
        "gcloud run deploy s --set-env-vars=LOG_FORMAT=json,TRACE_EXPORT=gcp\n"
        "gcloud run services update s \\\n"
        "  --update-env-vars=^@^UPLOADS_BUCKET=a,b@EVENT_AUDIENCE=x\n"
        "```\n"
    )
    assert setting_problems(text) == [
        "MAX_UPLOADS_MB: not a setting",
        "LABELLER: not a setting",
        "MAX_PIXEL: not a setting",
        "NOT_CHECKED: not a setting",
        "GCS_BUKET: not a setting",
        "TRACE_EXPORT: not a setting",
        "EVENT_AUDIENCE: not a setting",
    ]
