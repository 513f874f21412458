"""Server CPU per request against in-process ``Pipeline.ingest``: what the server path adds.

Run ``python -m benchmarks.server_cpu [--against /path/to/other/checkout]``. For each of issue
13's inputs (the 2 MP and 12 MP JPEG photos and the 1 MP PNG screenshot of ``make bench-peers``,
``format=webp&width=1024``, labels off) it measures, in one process and in interleaved rounds:

- **server**: the Dockerfile's command (``tests/container.py``: gunicorn with gunicorn.conf.py,
  LocalStore) under wrk at 8 connections with distinct bytes on every request (the Lua body
  rewriting of ``benchmarks/peers.py``); the CPU time of the master and its workers (user +
  system, from /proc) divided by the requests answered;
- **in-process**: ``Pipeline.ingest`` of the app's own pipeline (``create_app``) on distinct
  copies of the same input, one at a time, ``time.process_time`` per upload;

and prints both and their ratio: the server's CPU beyond the engine is the multipart parsing,
the request's log line and metrics, gunicorn, and the threads waiting for a conversion slot.
CPU time, not req/s: on a shared machine it barely moves with the neighbours' load, and with
every core busy throughput is cores / CPU per request.

With ``--against`` the same rounds run on that checkout's code too (e.g. ``git archive main``
exported to a directory), alternating with this one, and a last column gives ours / theirs.

``--paired N`` (with ``--against``) compares the two servers alone, more finely: both run at
once, and in each of N bursts each server in turn (the order alternating) is sent exactly
``PAIRED_COUNTS`` distinct uploads of each input by 8 client threads; its CPU from before the
first request to after the last answer, divided by that count, has no requests in flight at
either end (wrk's fixed-time rounds count some half-paid ones), and the bursts are seconds apart,
so a neighbour's load weighs on both alike. It prints each server's median and the median of
the bursts' ratios.

``--media-root DIR --paired N`` compares this checkout with itself instead: one server with its
LocalStore under ``DIR`` (e.g. ``/dev/shm``, a tmpfs), the other under the scratch directory on
the temporary directory's disk, as ``make bench-peers`` runs it. It shows what the filesystem
costs an upload (a LocalStore upload creates about 16 files and fsyncs about 12 times).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import itertools
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

CASES = ("2 MP JPEG", "12 MP JPEG", "1 MP PNG screenshot")
BOUNDARY = "----cloud-image-app-server-cpu"
#: ``--paired``: uploads per burst and server (a few seconds of both cores each).
PAIRED_COUNTS = {"2 MP JPEG": 32, "12 MP JPEG": 24, "1 MP PNG screenshot": 40}
PAIRED_CLIENTS = 8


def measure(seconds: float, repeat: int, connections: int) -> dict[str, dict[str, float]]:
    """One round on the code importable from here: each case's server and in-process CPU ms."""
    from benchmarks import peers
    from cloud_image_app import create_app
    from imaging.config import Settings
    from imaging.pipeline import UploadOptions
    from tests import container

    peers.CONNECTIONS = connections
    wrk = peers.debian_tool("wrk", "wrk")
    if wrk is None:
        raise SystemExit("wrk is missing (apt-get install wrk, as root)")
    items = {item.name: item for item in peers.inputs()}
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-server-cpu-") as tmp:
        scratch = Path(tmp)
        script = scratch / "unique.lua"
        script.write_text(peers.WRK_SCRIPT)
        env = {"LABELER": "none", "GUNICORN_LOG_LEVEL": "warning", "LOG_LEVEL": "WARNING"}
        running = container.start_container(scratch / "server", **env)
        settings = Settings(
            media_root=scratch / "inproc",
            model_cache_dir=scratch / "models",
            labeler="none",
            secret_key="bench",  # noqa: S106 - a scratch app
            max_upload_mb=100,
        )
        pipeline = create_app(settings.validated()).extensions["imaging"].pipeline
        options = UploadOptions(formats=("webp",), width=peers.SIDE)
        serial = 0
        try:
            for i, name in enumerate(CASES):
                item = items[name]
                body = peers.multipart_body(item, BOUNDARY)
                target = peers.upload_target(
                    f"{running.url}/api/images",
                    body,
                    scratch / f"body-{i}",
                    f"multipart/form-data; boundary={BOUNDARY}",
                    item.crc_from,
                )
                peers.check_output(target)  # and a warm-up
                server = peers.run_wrk(wrk, script, target, seconds, [running.process.pid])
                times = []
                for k in range(repeat + 1):
                    serial += 1
                    unique = f"{serial:016d}".encode()  # MARK's 16 bytes, as wrk rewrites them
                    data = item.data.replace(peers.MARK, unique)
                    if item.crc_from:  # a PNG chunk: its CRC follows MARK
                        data = _png_fix_crc(data, item.data.index(peers.MARK), item.crc_from)
                    start = time.process_time()
                    pipeline.ingest(data, options)
                    if k:  # the first is a warm-up
                        times.append(time.process_time() - start)
                inproc = statistics.mean(times) * 1000
                out[name] = {
                    "server_ms": server.cpu_ms,
                    "inproc_ms": inproc,
                    "rps": server.rps,
                    "p95_ms": server.p95_ms,
                    "errors": float(server.errors),
                }
        finally:
            container.stop(running)
    return out


def _png_fix_crc(data: bytes, mark: int, crc_from: int) -> bytes:
    import struct
    import zlib

    crc = struct.pack(">I", zlib.crc32(data[mark - crc_from : mark + 16]))
    return data[: mark + 16] + crc + data[mark + 20 :]


def _child(checkout: str, seconds: float, repeat: int, connections: int) -> dict[str, Any]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);"
        "from benchmarks_server_cpu import measure;"
        "print(json.dumps(measure(float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))"
    )
    with tempfile.TemporaryDirectory() as shim:
        # This script, importable under a name that cannot clash with the other checkout's own.
        Path(shim, "benchmarks_server_cpu.py").write_text(Path(__file__).read_text())
        argv = [checkout, shim, str(seconds), str(repeat), str(connections)]
        result = subprocess.run(
            [sys.executable, "-c", code, *argv],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
            cwd=checkout,
        )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _container_module(checkout: str) -> ModuleType:
    """``checkout``'s own tests/container.py (its ROOT is that checkout), loaded by path."""
    name = f"container_of_{abs(hash(checkout))}"
    spec = importlib.util.spec_from_file_location(name, Path(checkout, "tests", "container.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _post_all(url: str, bodies: list[bytes]) -> list[int]:
    """POST every body to ``url``/api/images from PAIRED_CLIENTS threads; the non-201 codes."""
    parts = urlsplit(url)
    pending, lock, refused = iter(bodies), threading.Lock(), []

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300)
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        while True:
            with lock:
                body = next(pending, None)
            if body is None:
                break
            conn.request("POST", "/api/images", body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                refused.append(response.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(PAIRED_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return refused


def paired(
    checkouts: dict[str, str], bursts: int, media_roots: dict[str, Path] | None = None
) -> dict[str, dict[str, list[float]]]:
    """``--paired``: every checkout's server up at once, CPU ms per upload for each burst;
    ``media_roots``: a server's MEDIA_ROOT, where not under the scratch directory."""
    from benchmarks import peers

    items = peers.inputs()
    serial = itertools.count(1)

    def bodies(item: Any, count: int) -> list[bytes]:
        base = peers.multipart_body(item, BOUNDARY)
        at = base.index(peers.MARK)
        out = []
        for _ in range(count):
            body = bytearray(base)
            body[at : at + 16] = f"{next(serial):016d}".encode()
            if item.crc_from:  # a PNG chunk: its CRC follows MARK
                crc = zlib.crc32(bytes(body[at - item.crc_from : at + 16]))
                body[at + 16 : at + 20] = struct.pack(">I", crc)
            out.append(bytes(body))
        return out

    modules = {name: _container_module(checkout) for name, checkout in checkouts.items()}
    env = {"LABELER": "none", "GUNICORN_LOG_LEVEL": "warning", "LOG_LEVEL": "WARNING"}
    cpu: dict[str, dict[str, list[float]]] = {n: {i.name: [] for i in items} for n in checkouts}
    with tempfile.TemporaryDirectory(prefix="bench-server-cpu-") as tmp:
        roots = {n: {"MEDIA_ROOT": str(r)} for n, r in (media_roots or {}).items()}
        running = {
            n: m.start_container(Path(tmp, n), **env, **roots.get(n, {}))
            for n, m in modules.items()
        }
        try:
            for server in running.values():  # a warm-up: every worker has converted each
                for item in items:
                    _post_all(server.url, bodies(item, PAIRED_CLIENTS))
            for burst in range(bursts):
                order = list(running) if burst % 2 == 0 else list(running)[::-1]
                for item in items:
                    for name in order:
                        server = running[name]
                        sent = bodies(item, PAIRED_COUNTS[item.name])
                        before = peers.cpu_seconds([server.process.pid])
                        refused = _post_all(server.url, sent)
                        used = peers.cpu_seconds([server.process.pid]) - before
                        if refused:
                            raise RuntimeError(f"{name}: {item.name} answered {refused}")
                        cpu[name][item.name].append(1000 * used / len(sent))
                print(f"burst {burst + 1}/{bursts}", file=sys.stderr)
        finally:
            for name, server in running.items():
                modules[name].stop(server)
    return cpu


def _print_paired(
    cpu: dict[str, dict[str, list[float]]], bursts: int, names: tuple[str, str] = ("ours", "theirs")
) -> None:
    load = os.getloadavg()
    print(f"\nlabels off, {PAIRED_CLIENTS} clients, {bursts} paired bursts of {PAIRED_COUNTS};")
    print(f"medians of the bursts; load average {load[0]:.1f} at the end\n")
    first, second = names
    print(f"| input | {first}: server CPU ms/req | {second} | {first} / {second} | per burst |")
    print("|---|---:|---:|---:|---|")
    for case in CASES:
        ours, theirs = cpu["ours"][case], cpu["theirs"][case]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"| {case} | {statistics.median(ours):.0f} | {statistics.median(theirs):.0f} | "
            f"{statistics.median(ratios):.2f}x | {' '.join(f'{r:.2f}' for r in ratios)} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--against", help="another checkout, measured in the same rounds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0, help="wrk time per case")
    parser.add_argument("--repeat", type=int, default=6, help="in-process uploads per case")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--paired", type=int, metavar="N", help="N paired bursts, servers only")
    parser.add_argument(
        "--media-root", type=Path, help="--paired: this checkout with its LocalStore under here"
    )
    args = parser.parse_args(argv)
    here = str(Path(__file__).resolve().parents[1])
    if args.media_root:
        if not args.paired or args.against:
            parser.error("--media-root compares this checkout with itself: give --paired alone")
        with tempfile.TemporaryDirectory(prefix="bench-media-", dir=args.media_root) as media:
            cpu = paired({"ours": here, "theirs": here}, args.paired, {"ours": Path(media)})
        _print_paired(cpu, args.paired, (f"MEDIA_ROOT in {args.media_root}", "in the scratch dir"))
        return
    checkouts = {"ours": here, **({"theirs": args.against} if args.against else {})}
    if args.paired:
        if not args.against:
            parser.error("--paired compares two servers: give --against")
        _print_paired(paired(checkouts, args.paired), args.paired)
        return
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in checkouts}
    load = os.getloadavg()
    for r in range(args.rounds):
        for name, checkout in checkouts.items():
            print(f"round {r + 1}/{args.rounds}: {name} ({checkout})", file=sys.stderr)
            result = _child(checkout, args.seconds, args.repeat, args.connections)
            runs[name].append(result)
            for case in CASES:
                m = result[case]
                print(
                    f"  {case:20} server {m['server_ms']:4.0f} ms/req  in-process "
                    f"{m['inproc_ms']:4.0f} ms  {m['rps']:5.1f} req/s  p95 {m['p95_ms']:5.0f} ms",
                    file=sys.stderr,
                )

    def med(name: str, case: str, key: str) -> float:
        return float(statistics.median(run[case][key] for run in runs[name]))

    head = "| input | server CPU ms/req | in-process CPU ms | server / in-process |"
    rule = "|---|---:|---:|---:|"
    if args.against:
        head += " theirs: server | theirs: in-process | theirs: ratio | server, ours / theirs |"
        rule += "---:|---:|---:|---:|"
    print(f"\nlabels off, wrk c={args.connections}, {args.rounds} rounds x {args.seconds:g} s;")
    print(f"medians of the rounds; load average {load[0]:.1f} at the start\n")
    print(head)
    print(rule)
    for case in CASES:
        row = f"| {case} |"
        for name in checkouts:
            server, inproc = med(name, case, "server_ms"), med(name, case, "inproc_ms")
            row += f" {server:.0f} | {inproc:.0f} | {server / inproc:.2f}x |"
        if args.against:
            row += f" {med('ours', case, 'server_ms') / med('theirs', case, 'server_ms'):.2f}x |"
        print(row)


if __name__ == "__main__":
    main()
