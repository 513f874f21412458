"""What machine a figure was measured on: the one CPU-name reader the benchmarks and the load
test print beside their numbers."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform says, else "unknown CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def process_tree(roots: list[int]) -> tuple[list[int], dict[int, list[str]]]:
    """The pids of the process trees under ``roots`` (in pid order), and every live process's
    /proc/<pid>/stat fields after the command name: the one tree walk the benchmarks share."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
    tree, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, fields in stats.items() if int(fields[1]) == parent]
        tree.update(children)
        frontier.extend(children)
    return sorted(pid for pid in tree if pid in stats), stats


def resident_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MB, from /proc/<pid>/smaps_rollup; PSS counts a page shared
    by n processes 1/n in each. (0, 0) if the process is gone."""
    rss = pss = 0.0
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return rss, pss
    for line in rollup.splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Pss:"):
            pss = int(line.split()[1]) / 1024
    return rss, pss
