"""PerProcess: one value per process, built on first use, rebuilt in a forked child."""

from __future__ import annotations

import os
import threading

from imaging.gclients import PerProcess


def test_the_value_is_built_once_on_first_use() -> None:
    builds: list[int] = []

    def build() -> object:
        builds.append(1)
        return object()

    holder = PerProcess(build)
    assert builds == []
    assert holder.get() is holder.get()
    assert builds == [1]


def test_racing_first_uses_build_once() -> None:
    builds: list[int] = []
    start = threading.Barrier(8)

    def build() -> object:
        builds.append(1)
        return object()

    holder = PerProcess(build)
    seen: list[object] = []

    def use() -> None:
        start.wait()
        seen.append(holder.get())

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert builds == [1]
    assert len({id(v) for v in seen}) == 1


def test_a_forked_child_builds_its_own_value() -> None:
    holder = PerProcess(object)
    parent_value = holder.get()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe and leave at once
        os.write(write_end, b"new" if holder.get() is not parent_value else b"same")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_end, 4) == b"new"
    assert holder.get() is parent_value
