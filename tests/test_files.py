"""``cinn.files.publish``: all-or-nothing groups, exclusive names, no half-written files, symlinks kept."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cinn.files import publish


def writer(text: str):
    return lambda path: Path(path).write_text(text)


def test_a_group_appears_whole(tmp_path):
    targets = [tmp_path / "a.txt", tmp_path / "b.txt"]
    publish({target: writer(target.stem) for target in targets})
    assert [target.read_text() for target in targets] == ["a", "b"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temporary left


def test_a_taken_name_leaves_nothing_of_the_group_and_keeps_the_users_file(tmp_path):
    (tmp_path / "b.txt").write_text("the user's")
    with pytest.raises(FileExistsError, match="b.txt' already exists"):
        publish({tmp_path / "a.txt": writer("new a"), tmp_path / "b.txt": writer("new b")})
    assert not (tmp_path / "a.txt").exists()
    assert (tmp_path / "b.txt").read_text() == "the user's"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["b.txt"]


def test_a_failing_writer_leaves_no_file_under_a_final_name(tmp_path):
    def broken(path):
        Path(path).write_text("half")
        raise KeyboardInterrupt  # e.g. Ctrl-C while encoding

    with pytest.raises(KeyboardInterrupt):
        publish({tmp_path / "a.txt": writer("a"), tmp_path / "b.txt": broken})
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_a_symlink_and_never_writes_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").symlink_to(outside)
    with pytest.raises(FileExistsError):  # a symlink (even one pointing outside) is a taken name
        publish({out / "a.txt": writer("new")})
    publish({out / "a.txt": writer("new")}, overwrite=True)
    assert not (out / "a.txt").is_symlink() and (out / "a.txt").read_text() == "new"
    assert outside.read_text() == "precious"


def test_two_writers_into_one_folder_never_mix(tmp_path):
    names = [tmp_path / f"photo_color_{index}.txt" for index in range(6)]
    start, outcomes = threading.Barrier(2), {}

    def run(label: str) -> None:
        start.wait()
        try:
            publish({name: writer(label) for name in names})
            outcomes[label] = "written"
        except FileExistsError:
            outcomes[label] = "refused"

    threads = [threading.Thread(target=run, args=(label,)) for label in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["refused", "written"]
    winner = next(label for label, outcome in outcomes.items() if outcome == "written")
    assert [name.read_text() for name in names] == [winner] * 6
