"""Object stores keep the same guarantees on a local folder, in memory and on Cloud
Storage (fake-gcs-server through google-cloud-storage)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from resumable.errors import ObjectNotFoundError, PreconditionFailedError, StorageError
from resumable.storage import LocalStore, MemoryStore, ObjectStore, open_store


@pytest.fixture(params=["local", "memory", pytest.param("gcs", marks=pytest.mark.emulators)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path)
    if request.param == "memory":
        return MemoryStore()
    bucket = request.getfixturevalue("gcs_bucket")
    return open_store(f"gs://{bucket}/some/prefix")


def test_write_read_list_delete(store: ObjectStore) -> None:
    store.write("a/b/one", b"1")
    store.write("a/b/two", [b"t", memoryview(b"wo")])
    store.write("a/c", bytearray(b"c"))
    assert store.read("a/b/two") == b"two"
    assert bytes(store.read_buffer("a/c")) == b"c"
    assert list(store.list("a/b/")) == ["a/b/one", "a/b/two"]
    assert list(store.list("a/")) == ["a/b/one", "a/b/two", "a/c"]
    assert store.exists("a/c") and not store.exists("a/zzz")
    assert store.delete_prefix("a/b/") == 2
    assert list(store.list("a/")) == ["a/c"]
    store.delete("a/c")
    store.delete("a/c")  # deleting a missing object is not an error
    with pytest.raises(ObjectNotFoundError):
        store.read("a/c")
    assert store.stats.bytes_written == 5 and store.stats.objects_written == 3


def test_create_only_writes_lose_to_an_existing_object(store: ObjectStore) -> None:
    store.write("blob", b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailedError):
        store.write("blob", b"second", if_generation_match=0)
    assert store.read("blob") == b"first"


def test_a_write_conditional_on_a_stale_generation_loses(store: ObjectStore) -> None:
    generation = store.write("latest", b"v1")
    _, seen = store.read_with_generation("latest")
    assert seen == generation
    newer = store.write("latest", b"v2", if_generation_match=generation)
    with pytest.raises(PreconditionFailedError):
        store.write("latest", b"v3", if_generation_match=generation)
    assert store.read("latest") == b"v2"
    assert store.write("latest", b"v4", if_generation_match=newer)
    assert store.read("latest") == b"v4"


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/../b", "a//b", ""])
def test_unsafe_object_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(StorageError, match="unsafe object name"):
        LocalStore(tmp_path).write(name, b"x")


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for i in range(5):
        store.write("x/obj", f"{i}".encode())
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["obj"]


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("/tmp/x", LocalStore), ("file:///tmp/y", LocalStore), ("memory://t", MemoryStore)],
)
def test_open_store_understands_urls(spec: str, kind: type) -> None:
    assert isinstance(open_store(spec), kind)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("s3://bucket", "unsupported storage URL"),
        ("gs://", "names no bucket"),
        (42, "must be"),
        ("file://rel/x", "does not name an absolute folder"),
        ("file:rel/x", "does not name an absolute folder"),
        ("file://host.example/data", "does not name an absolute folder"),
        ("file:///tmp/x?mode=fast", "query or fragment"),
    ],
)
def test_open_store_refuses_what_it_cannot_open(spec: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        open_store(spec)


@pytest.mark.parametrize(
    ("spec", "folder"),
    [("file:///tmp/x", "/tmp/x"), ("file://localhost/tmp/y", "/tmp/y"), ("file:/tmp/z", "/tmp/z")],
)
def test_file_urls_name_absolute_folders(spec: str, folder: str) -> None:
    store = open_store(spec)
    assert isinstance(store, LocalStore) and store.root == Path(folder)


def test_a_conditional_write_of_the_bytes_already_there_succeeds_as_a_retried_write(
    store: ObjectStore,
) -> None:
    """A client retries a conditional write whose response was lost; the retry finds the
    condition changed by the first attempt, and must not read as another writer."""
    created = store.write("blob", b"same", if_generation_match=0)
    assert store.write("blob", b"same", if_generation_match=0) == created
    first = store.write("latest", b"v1", if_generation_match=0)
    second = store.write("latest", b"v2", if_generation_match=first)
    assert store.write("latest", b"v2", if_generation_match=first) == second
    with pytest.raises(PreconditionFailedError):
        store.write("latest", b"v3", if_generation_match=first)
    with pytest.raises(PreconditionFailedError):
        store.write("blob", b"else", if_generation_match=0)
    assert store.read("latest") == b"v2" and store.read("blob") == b"same"


def test_two_replaces_within_one_clock_tick_get_distinct_generations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    first = store.write("latest", b"v1")
    tick = first  # a file system clock that has not advanced since the first write
    write_file = LocalStore._write_file

    def written_within_the_same_tick(self: LocalStore, tmp: Path, parts: list[memoryview]) -> int:
        size = write_file(self, tmp, parts)
        os.utime(tmp, ns=(tick, tick))
        return size

    monkeypatch.setattr(LocalStore, "_write_file", written_within_the_same_tick)
    monkeypatch.setattr(
        "resumable.storage.local.time", SimpleNamespace(time_ns=lambda: tick), raising=False
    )
    second = store.write("latest", b"v2", if_generation_match=first)
    assert second != first
    with pytest.raises(PreconditionFailedError):  # a writer that still holds `first` loses
        store.write("latest", b"stale", if_generation_match=first)
    assert store.read_with_generation("latest") == (b"v2", second)


def test_temporary_files_of_a_writer_killed_mid_write_go_with_the_run(tmp_path: Path) -> None:
    killed_mid_write = textwrap.dedent(
        """
        import os, signal, sys
        from resumable.storage import LocalStore

        store = LocalStore(sys.argv[1])
        store.write("runs/t/p/r/checkpoints/0000000001.json", b"{}", if_generation_match=0)
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies before the rename
        store.write("runs/t/p/r/blobs/b3-abc", b"data", if_generation_match=0)
        """
    )
    process = subprocess.run([sys.executable, "-c", killed_mid_write, str(tmp_path)], check=False)
    assert process.returncode == -signal.SIGKILL
    leftovers = [p.name for p in (tmp_path / "runs/t/p/r/blobs").iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-b3-abc-")
    store = LocalStore(tmp_path)
    store.write("runs/t/p/other/blobs/b3-abc", b"kept")
    assert store.delete_prefix("runs/t/p/r/") == 1
    assert not (tmp_path / "runs/t/p/r").exists()
    assert store.read("runs/t/p/other/blobs/b3-abc") == b"kept"


def test_a_folder_where_an_object_belongs_is_a_storage_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "run" / ".checkpoint.json").mkdir(parents=True)
    for action in (
        lambda: store.read("run/.checkpoint.json"),
        lambda: store.read_with_generation("run/.checkpoint.json"),
        lambda: store.write("run/.checkpoint.json", b"{}"),
    ):
        with pytest.raises(StorageError, match=r"is a folder where object 'run/\.checkpoint"):
            action()


def test_a_file_where_a_folder_belongs_means_no_object_and_no_write(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("run", b"a file")
    with pytest.raises(ObjectNotFoundError):
        store.read("run/.checkpoint.json")
    with pytest.raises(StorageError, match=r"a file of .* is in its path"):
        store.write("run/.checkpoint.json", b"{}")


def test_a_replacing_write_of_a_just_created_objects_bytes_links_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    manifest = b'{"sequence": 1}'
    store.write("run/checkpoints/1.json", manifest, if_generation_match=0)
    generation = store.write("run/latest.json", manifest, if_generation_match=None)
    assert store.read_with_generation("run/latest.json") == (manifest, generation)
    history, latest = tmp_path / "run/checkpoints/1.json", tmp_path / "run/latest.json"
    assert os.path.samefile(history, latest)
    assert store.stats.bytes_written == len(manifest)
    # Replacing the latest object later leaves the created one as it was.
    store.write("run/latest.json", b'{"sequence": 2}', if_generation_match=generation)
    assert history.read_bytes() == manifest and latest.read_bytes() == b'{"sequence": 2}'
    assert not os.path.samefile(history, latest)


def test_other_bytes_are_written_not_linked(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("a", b"one", if_generation_match=0)
    store.write("b", bytes(bytearray(b"one")))  # equal bytes, another object: compared
    store.write("c", b"two")
    assert os.path.samefile(tmp_path / "a", tmp_path / "b")
    assert not os.path.samefile(tmp_path / "a", tmp_path / "c")
    (tmp_path / "a").unlink()  # gone since: written, not linked
    store.write("d", b"one")
    assert (tmp_path / "d").read_bytes() == b"one"
