"""Side-by-side HTTP benchmark against the peers: the app, thumbor and sharp, on the same cores.

Run: ``make bench-peers`` (``python -m benchmarks.peers [--quick] [--rounds N] [--seconds S]``).
Not a test and never asserted: it prints the table of issue 13 and the ratios.

Each server is asked for the same operation, a fit into 1024x1024 as WebP quality 80, at 8
concurrent connections (wrk), in interleaved rounds so that a noisy neighbour hurts every
server alike:

- **app, labels off / default labeler**: the Dockerfile's command (gunicorn with gunicorn.conf.py,
  started by ``tests.container``, which reads the Dockerfile) on LocalStore under a scratch
  MEDIA_ROOT, answering ``POST /api/images`` (format=webp, width=1024). It does more than the
  peers: a thumbnail, the storage writes, the record, and labels in the second column.
- **thumbor** 7.x: two single-process servers (one per core) behind Debian's nginx, asked
  ``GET /unsafe/fit-in/1024x1024/filters:format(webp):quality(80)/<file>`` from its file loader,
  storage and result storage off. The loader reads a local file rather than parsing an upload,
  the cheapest path thumbor has, so the comparison leans its way.
- **sharp**: a Node cluster of 2 workers (written into the cache directory at run time) that takes
  the POSTed bytes and answers ``resize(1024, 1024, fit: inside)`` + ``webp(quality: 80)``, with
  libvips' operation cache off.

Wherever a server takes an upload, a wrk Lua script rewrites 16 bytes of the body on every
request (a JPEG COM segment, a PNG tEXt chunk with its CRC), so no cache or duplicate index helps.

The peers are installed into a cache directory outside the repository, ``PEERS_CACHE_DIR``
(default ``~/.cache/cloud-image-app-peers``): thumbor from PyPI into its own venv, sharp from npm
into a node_modules there; wrk and nginx from Debian (apt-get, as root) when missing. A peer that
fails to install is skipped with a message and its column says so.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from benchmarks.engine import photo, screenshot
from benchmarks.machine import cpu_model, process_tree, resident_mb

CACHE = Path(
    os.environ.get("PEERS_CACHE_DIR") or Path.home() / ".cache" / "cloud-image-app-peers"
).expanduser()
THUMBOR_REQUIREMENT = "thumbor>=7,<8"
SHARP_REQUIREMENT = "sharp@>=0.33 <1"
CONNECTIONS = 8
SIDE, QUALITY = 1024, 80
MARK = b"@@unique-bytes@@"  # the 16 bytes the wrk script rewrites on every request
START_WAIT = 90.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- installing the peers --------------------------------------------------------------------------


def run_quietly(argv: list[str], log: Path, timeout: float = 900) -> bool:
    """Run an install step, its output into ``log``; True when it succeeded."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            return subprocess.run(argv, stdout=out, stderr=out, timeout=timeout).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


def debian_tool(name: str, package: str) -> str | None:
    """The path of ``name``, installing ``package`` with apt-get first when it is missing."""
    found = shutil.which(name)
    if found or os.geteuid() != 0:
        return found
    say(f"installing {package} from Debian...")
    log = CACHE / f"apt-{package}.log"
    apt = ["apt-get", "install", "-y", "-q", package]
    if not run_quietly(apt, log):
        run_quietly(["apt-get", "update", "-q"], log)
        run_quietly(apt, log)
    return shutil.which(name)


def install_into_venv(venv: Path, requirement: str, log: Path) -> bool:
    """Create ``venv`` (a benchmark's own, under the cache) and pip-install ``requirement``
    into it, their output into ``log``; True when both succeeded."""
    say(f"installing {requirement} into {venv}...")
    base = getattr(sys, "_base_executable", sys.executable)
    return run_quietly([base, "-m", "venv", str(venv)], log) and run_quietly(
        [str(venv / "bin" / "pip"), "install", "--quiet", requirement], log
    )


def venv_version(venv: Path, distribution: str) -> str:
    """The version of ``distribution`` installed in ``venv``, or "?"."""
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({distribution!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return version or "?"


def install_thumbor() -> tuple[Path | None, str]:
    """thumbor's executable in its own venv under the cache, or None and why not."""
    venv = CACHE / "thumbor-venv"
    executable = venv / "bin" / "thumbor"
    if not executable.exists():
        log = CACHE / "thumbor-install.log"
        if not install_into_venv(venv, THUMBOR_REQUIREMENT, log) or not executable.exists():
            return None, f"pip install {THUMBOR_REQUIREMENT} failed (see {log})"
    return executable, venv_version(venv, "thumbor")


def install_sharp() -> tuple[Path | None, str]:
    """The directory holding node_modules/sharp, or None and why not."""
    home = CACHE / "sharp"
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "node and npm are not installed"
    package = home / "node_modules" / "sharp" / "package.json"
    if not package.exists():
        say(f"installing {SHARP_REQUIREMENT} into {home}...")
        home.mkdir(parents=True, exist_ok=True)
        manifest = home / "package.json"
        if not manifest.exists():
            manifest.write_text('{"name": "cloud-image-app-peers-sharp", "private": true}\n')
        log = CACHE / "sharp-install.log"
        npm_install = [npm, "install", "--no-audit", "--no-fund", SHARP_REQUIREMENT]
        if not run_quietly([*npm_install, "--prefix", str(home)], log) or not package.exists():
            return None, f"npm install {SHARP_REQUIREMENT} failed (see {log})"
    version = str(json.loads(package.read_text()).get("version", "?"))
    return home, version


# -- inputs ----------------------------------------------------------------------------------------


def jpeg_with_mark(data: bytes) -> bytes:
    """The JPEG with a COM segment holding MARK right after SOI."""
    assert data[:2] == b"\xff\xd8"
    return data[:2] + b"\xff\xfe" + struct.pack(">H", 2 + len(MARK)) + MARK + data[2:]


def png_with_mark(data: bytes) -> bytes:
    """The PNG with a tEXt chunk ending in MARK after IHDR (the wrk script redoes its CRC)."""
    ihdr_end = 8 + 4 + 4 + 13 + 4
    body = b"tEXt" + b"Comment\x00" + MARK
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return data[:ihdr_end] + chunk + data[ihdr_end:]


@dataclass(frozen=True)
class Input:
    name: str
    filename: str
    data: bytes  # holds MARK once
    crc_from: int  # the offset, from MARK, where the CRC over it starts; 0: no CRC to redo


def inputs() -> list[Input]:
    say("building the inputs (2 MP and 12 MP JPEG photos, 1 MP PNG screenshot)...")
    png = png_with_mark(screenshot(1280, 800))
    return [
        Input("2 MP JPEG", "photo-2mp.jpg", jpeg_with_mark(photo(1632, 1224)), 0),
        Input("12 MP JPEG", "photo-12mp.jpg", jpeg_with_mark(photo(4000, 3000)), 0),
        Input("1 MP PNG screenshot", "screenshot-1mp.png", png, len(b"tEXtComment\x00")),
    ]


# -- wrk -------------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Written by benchmarks/peers.py. args: body file, MARK offset (0-based, -1: GET),
-- CRC start before MARK (0: none), content type, this run's number (so no two runs send
-- the same bytes: the app's duplicate index would answer a repeat without converting).
local bit = require("bit")
local counter, prefix, suffix, crc_head, run = 0, nil, nil, nil, 0
local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if bit.band(c, 1) == 1 then
      c = bit.bxor(0xEDB88320, bit.rshift(c, 1))
    else
      c = bit.rshift(c, 1)
    end
  end
  crc_table[i] = c
end
local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bit.bxor(crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)], bit.rshift(c, 8))
  end
  c = bit.bxor(c, 0xFFFFFFFF)
  return string.char(bit.band(bit.rshift(c, 24), 255), bit.band(bit.rshift(c, 16), 255),
                     bit.band(bit.rshift(c, 8), 255), bit.band(c, 255))
end

local threads, next_id = {}, 0
function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

function init(args)
  local offset, crc_from = tonumber(args[2]), tonumber(args[3])
  run = tonumber(args[5])
  if offset < 0 then return end
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  prefix = body:sub(1, offset)
  if crc_from > 0 then
    crc_head = body:sub(offset - crc_from + 1, offset)
    suffix = body:sub(offset + 16 + 4 + 1)
  else
    suffix = body:sub(offset + 16 + 1)
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = args[4]
end

function request()
  if prefix == nil then return wrk.format() end
  counter = counter + 1
  local unique = string.format("%06x%02x%08x", run, id, counter)
  local middle = unique
  if crc_head then middle = unique .. crc32(crc_head .. unique) end
  return wrk.format(nil, nil, nil, prefix .. middle .. suffix)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRK-JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass(frozen=True)
class Target:
    """What wrk asks one server for one input."""

    url: str
    body: Path | None = None  # None: a GET
    offset: int = -1
    crc_from: int = 0
    content_type: str = ""


@dataclass(frozen=True)
class Measure:
    rps: float
    p95_ms: float
    errors: int
    cpu_ms: float  # the server's CPU time (all its processes) per answered request


TICK = os.sysconf("SC_CLK_TCK")
RUNS = itertools.count(1)  # numbers each wrk run, so each sends bytes no run sent before


def cpu_seconds(roots: list[int]) -> float:
    """CPU time of the process trees under ``roots``, reaped children included.

    On a shared machine req/s moves with the neighbours' load; CPU per request barely does, and
    with every server keeping both cores busy, throughput is cores / CPU per request.
    """
    tree, stats = process_tree(roots)
    ticks = sum(sum(int(x) for x in stats[pid][11:15]) for pid in tree)  # utime stime cu cs
    return ticks / TICK


def memory_mb(roots: list[int]) -> tuple[float, float, int]:
    """Resident memory of the process trees under ``roots``: RSS summed (each shared page once
    per process), PSS summed (a page shared by n processes counted 1/n), and the process count."""
    tree, _ = process_tree(roots)
    each = [resident_mb(pid) for pid in tree]
    return sum(rss for rss, _ in each), sum(pss for _, pss in each), len(tree)


def run_wrk(
    wrk: str, script: Path, target: Target, seconds: float, roots: list[int] | None = None
) -> Measure:
    argv = [
        wrk,
        f"-c{CONNECTIONS}",
        f"-t{min(CONNECTIONS, 2)}",
        f"-d{seconds:g}s",
        "--timeout",
        "60s",
        "-s",
        str(script),
        target.url,
        "--",
        str(target.body or ""),
        str(target.offset),
        str(target.crc_from),
        target.content_type,
        str(next(RUNS)),
    ]
    cpu_before = cpu_seconds(roots or [])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=False)
    cpu = cpu_seconds(roots or []) - cpu_before
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK-JSON ")]
    if not lines:
        raise RuntimeError(f"wrk printed no figures:\n{done.stdout}\n{done.stderr}")
    figures = json.loads(lines[-1].removeprefix("WRK-JSON "))
    errors = sum(figures[k] for k in ("connect", "read", "write", "status", "timeout"))
    good = figures["requests"] - figures["status"]
    rps = good / (figures["duration_us"] / 1e6)
    # Requests still in flight when wrk stops were partly paid for: a small overestimate.
    return Measure(rps, figures["p95_us"] / 1000, errors, 1000 * cpu / max(good, 1))


# -- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {START_WAIT:.0f}s")


def spawn(
    stack: contextlib.ExitStack, argv: list[str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group; the stack ends the whole group."""
    out = stack.enter_context(log.open("wb"))
    process = subprocess.Popen(
        argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=cwd,
    )

    def end() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    stack.callback(end)
    return process


def start_app(
    stack: contextlib.ExitStack, scratch: Path, labeler: str, **extra: str
) -> tuple[str, int]:
    """The Dockerfile's CMD on LocalStore under a scratch MEDIA_ROOT (tests/container.py), with
    ``extra`` settings in its environment."""
    from tests import container

    env = {"LABELER": labeler, "GUNICORN_LOG_LEVEL": "warning", "LOG_LEVEL": "WARNING", **extra}
    if labeler == "local":
        # The image builds the model at build time; do the same, so no request pays for it.
        models = CACHE / "models"
        container.convert_model(models)
        env["MODEL_CACHE_DIR"] = str(models)
    running = container.start_container(scratch, **env)
    stack.callback(container.stop, running)
    return running.url, running.process.pid


THUMBOR_CONF = """\
# Written by benchmarks/peers.py: the cheapest honest path, nothing kept between requests.
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {root!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ENGINE = 'thumbor.engines.pil'
ALLOW_UNSAFE_URL = True
QUALITY = {quality}
WEBP_QUALITY = {quality}
MAX_AGE = 0
"""

NGINX_CONF = """\
# Written by benchmarks/peers.py: one port in front of the thumbor processes.
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream thumbor {{
    least_conn;
{servers}
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://thumbor;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffers 16 64k;
      proxy_read_timeout 120s;
    }}
  }}
}}
"""


def start_thumbor(
    stack: contextlib.ExitStack, scratch: Path, thumbor: Path, nginx: str, files: Path
) -> tuple[str, list[int]]:
    """Two single-process thumbor servers (one per core) behind nginx."""
    scratch.mkdir(parents=True)
    conf = scratch / "thumbor.conf"
    conf.write_text(THUMBOR_CONF.format(root=str(files), quality=QUALITY))
    ports = [free_port() for _ in range(os.cpu_count() or 1)]
    pids = []
    for i, port in enumerate(ports):
        argv = [str(thumbor), "-i", "127.0.0.1", "-p", str(port), "-c", str(conf), "-l", "warning"]
        process = spawn(stack, argv, scratch / f"thumbor-{i}.log")
        pids.append(process.pid)
        wait_http(f"http://127.0.0.1:{port}/healthcheck", "thumbor", process)
    port = free_port()
    servers = "\n".join(f"    server 127.0.0.1:{p};" for p in ports)
    scratch.chmod(0o755)  # nginx's workers drop root and must reach their temp paths
    (scratch / "nginx.conf").write_text(NGINX_CONF.format(dir=scratch, servers=servers, port=port))
    argv = [nginx, "-p", str(scratch), "-c", str(scratch / "nginx.conf"), "-g", "daemon off;"]
    process = spawn(stack, argv, scratch / "nginx.log")
    wait_http(f"http://127.0.0.1:{port}/healthcheck", "nginx", process)
    return f"http://127.0.0.1:{port}", [*pids, process.pid]


SHARP_SERVER = """\
// Written by benchmarks/peers.py: a Node cluster that converts each POSTed image.
const cluster = require("node:cluster");
const http = require("node:http");
const sharp = require("sharp");
const [port, workers, side, quality] = process.argv.slice(2).map(Number);
if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on("exit", () => process.exit(1));
  for (const s of ["SIGTERM", "SIGINT"]) process.on(s, () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  });
} else {
  sharp.cache(false);
  const server = http.createServer((req, res) => {
    if (req.method !== "POST") { res.writeHead(200); res.end("ok"); return; }
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      sharp(Buffer.concat(chunks))
        .resize(side, side, { fit: "inside", withoutEnlargement: true })
        .webp({ quality })
        .toBuffer()
        .then((out) => { res.writeHead(200, { "Content-Type": "image/webp" }); res.end(out); })
        .catch((err) => { res.writeHead(422); res.end(String(err)); });
    });
  });
  server.keepAliveTimeout = 65000;
  server.listen(port, "127.0.0.1");
}
"""


def start_sharp(stack: contextlib.ExitStack, scratch: Path, home: Path) -> tuple[str, int]:
    """sharp's cluster: 2 workers (one per core) converting each POSTed image."""
    scratch.mkdir(parents=True)
    script = home / "server.js"
    script.write_text(SHARP_SERVER)
    port = free_port()
    node = shutil.which("node") or "node"
    argv = [node, str(script), str(port), str(os.cpu_count() or 1), str(SIDE), str(QUALITY)]
    process = spawn(stack, argv, scratch / "sharp.log", cwd=home)
    wait_http(f"http://127.0.0.1:{port}/", "sharp", process)
    return f"http://127.0.0.1:{port}", process.pid


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Column:
    name: str
    note: str  # a version, or why it was skipped
    targets: dict[str, Target] = field(default_factory=dict)  # by input name
    rounds: dict[str, list[Measure]] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)  # the server's processes, for its CPU time


def multipart_body(item: Input, boundary: str) -> bytes:
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in (("format", "webp"), ("width", str(SIDE)))
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="{item.filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    return head.encode() + item.data + f"\r\n--{boundary}--\r\n".encode()


def upload_target(url: str, body: bytes, path: Path, content_type: str, crc_from: int) -> Target:
    path.write_bytes(body)
    return Target(url, path, body.index(MARK), crc_from, content_type)


def check_output(target: Target) -> None:
    """One request by hand before timing: the server must answer, and do what was asked."""
    data = target.body.read_bytes() if target.body else None
    request = urllib.request.Request(target.url, data=data, method="POST" if data else "GET")
    if target.content_type:
        request.add_header("Content-Type", target.content_type)
    with urllib.request.urlopen(request, timeout=180) as response:
        answer = response.read()
    if answer[:4] == b"RIFF":
        with Image.open(io.BytesIO(answer)) as im:
            assert max(im.size) == SIDE, f"{target.url} answered {im.size}"


def machine(load_before: tuple[float, float, float], versions: list[str]) -> str:
    cpu = cpu_model()
    after = os.getloadavg()
    return (
        f"- CPU: {cpu}, {os.cpu_count()} logical cores (nproc)\n"
        f"- {platform.system()} {platform.release()}, Python {platform.python_version()}\n"
        f"- {'; '.join(versions)}\n"
        f"- load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.2f}' for x in after)} after"
    )


def table(columns: list[Column], names: list[str]) -> str:
    lines = [
        f"| req/s at c={CONNECTIONS} (p95 ms), -> {SIDE} px WebP q{QUALITY} | "
        + " | ".join(c.name for c in columns)
        + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name in names:
        cells = []
        for column in columns:
            rounds = column.rounds.get(name)
            if not rounds:
                cells.append(f"skipped: {column.note}" if name == names[0] else "-")
                continue
            rps = statistics.median(m.rps for m in rounds)
            p95 = statistics.median(m.p95_ms for m in rounds)
            errors = sum(m.errors for m in rounds)
            cells.append(f"{rps:.1f} ({p95:.0f})" + (f", {errors} errors" if errors else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(columns: list[Column], names: list[str]) -> str:
    by_name = {c.name: c for c in columns}
    lines = ["| ratio (median req/s) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for ours in ("app, labels off", "app, default labeler"):
        for peer in ("thumbor", "sharp"):
            cells = []
            for name in names:
                a, b = by_name[ours].rounds.get(name), by_name[peer].rounds.get(name)
                if a and b:
                    ratio = statistics.median(m.rps for m in a) / statistics.median(
                        m.rps for m in b
                    )
                    cells.append(f"{ratio:.2f}x")
                else:
                    cells.append("-")
            lines.append(f"| {ours} / {peer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_table(columns: list[Column], names: list[str]) -> str:
    lines = ["| server CPU ms per request (median) | " + " | ".join(c.name for c in columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    for name in names:
        cells = []
        for column in columns:
            rounds = column.rounds.get(name)
            cells.append(f"{statistics.median(m.cpu_ms for m in rounds):.0f}" if rounds else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def noise(columns: list[Column], names: list[str]) -> str:
    lines = ["| req/s min-max over rounds | " + " | ".join(c.name for c in columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    for name in names:
        cells = []
        for column in columns:
            rounds = column.rounds.get(name)
            if rounds:
                cells.append(f"{min(m.rps for m in rounds):.1f}-{max(m.rps for m in rounds):.1f}")
            else:
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 rounds x 5 s (default 3 x 10 s)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per server and input")
    parser.add_argument("--seconds", type=float, help="wrk duration of one measurement")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    # A SIGTERM (or a CI timeout) still runs the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = os.getloadavg()
    CACHE.mkdir(parents=True, exist_ok=True)

    wrk = debian_tool("wrk", "wrk")
    if wrk is None:
        raise SystemExit("wrk is missing and could not be installed (apt-get install wrk, as root)")
    nginx = debian_tool("nginx", "nginx")
    thumbor, thumbor_note = install_thumbor()
    if thumbor is not None and nginx is None:
        thumbor, thumbor_note = None, "nginx is missing and could not be installed"
    sharp_home, sharp_note = install_sharp()
    for name, path, note in (("thumbor", thumbor, thumbor_note), ("sharp", sharp_home, sharp_note)):
        if path is None:
            say(f"SKIPPING {name}: {note}")

    items = inputs()
    names = [item.name for item in items]
    columns = [
        Column("app, labels off", "gunicorn, LABELER=none"),
        Column("app, default labeler", "gunicorn, LABELER=local"),
        Column("thumbor", thumbor_note),
        Column("sharp", sharp_note),
    ]
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peers-")))
        files = scratch / "files"
        files.mkdir()
        for item in items:
            (files / item.filename).write_bytes(item.data)
        script = scratch / "unique.lua"
        script.write_text(WRK_SCRIPT)
        boundary = "----cloud-image-app-peers"
        multipart_type = f"multipart/form-data; boundary={boundary}"
        say("starting the servers...")
        for column, labeler in zip(columns[:2], ("none", "local"), strict=True):
            url, pid = start_app(stack, scratch / f"app-{labeler}", labeler)
            column.pids.append(pid)
            for i, item in enumerate(items):
                body = multipart_body(item, boundary)
                path = scratch / f"app-{labeler}-{i}.body"
                column.targets[item.name] = upload_target(
                    f"{url}/api/images", body, path, multipart_type, item.crc_from
                )
        if thumbor is not None and nginx is not None:
            url, columns[2].pids = start_thumbor(stack, scratch / "thumbor", thumbor, nginx, files)
            operation = f"unsafe/fit-in/{SIDE}x{SIDE}/filters:format(webp):quality({QUALITY})"
            for item in items:
                columns[2].targets[item.name] = Target(f"{url}/{operation}/{item.filename}")
        if sharp_home is not None:
            url, pid = start_sharp(stack, scratch / "sharp", sharp_home)
            columns[3].pids.append(pid)
            for i, item in enumerate(items):
                columns[3].targets[item.name] = upload_target(
                    url,
                    item.data,
                    scratch / f"sharp-{i}.body",
                    "application/octet-stream",
                    item.crc_from,
                )
        active = [c for c in columns if c.targets]
        say("checking each answer, then warming up...")
        for column in active:
            for item in items:
                check_output(column.targets[item.name])
            run_wrk(wrk, script, column.targets[names[0]], min(seconds, 3.0))
        for r in range(rounds):
            for item in items:
                for column in active:
                    target = column.targets[item.name]
                    measure = run_wrk(wrk, script, target, seconds, column.pids)
                    column.rounds.setdefault(item.name, []).append(measure)
                    say(
                        f"round {r + 1}/{rounds} {item.name:20} {column.name:21} "
                        f"{measure.rps:6.1f} req/s  p95 {measure.p95_ms:5.0f} ms  "
                        f"CPU {measure.cpu_ms:4.0f} ms/req"
                        + (f"  {measure.errors} errors" if measure.errors else "")
                    )
        # Issue 13's memory budget is for the whole server after the load test: read it now,
        # while every server still runs.
        memory = {column.name: memory_mb(column.pids) for column in active}
    memory_rows = ["| whole server after the load test | RSS summed | PSS summed | processes |"]
    memory_rows.append("|---|---:|---:|---:|")
    for name, (rss, pss, count) in memory.items():
        memory_rows.append(f"| {name} | {rss:.0f} MB | {pss:.0f} MB | {count} |")
        versions = [f"thumbor {thumbor_note}" if thumbor else "thumbor skipped"]
    versions.append(f"sharp {sharp_note}" if sharp_home else "sharp skipped")
    versions.append(f"wrk at c={CONNECTIONS}, {rounds} interleaved rounds x {seconds:g} s")
    print(f"\n{table(columns, names)}\n\n{ratios(columns, names)}\n")
    print(f"{cpu_table(columns, names)}\n\n{noise(columns, names)}\n")
    print("\n".join(memory_rows) + "\n")
    print(machine(load_before, versions))


if __name__ == "__main__":
    main()
