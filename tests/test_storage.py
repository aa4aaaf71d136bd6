"""unimusic.storage on local folders and on a real local S3 server (moto_server).

Every behaviour is checked with the same expectations on both backends, so the
two cannot drift apart. boto3 is never patched: S3 tests talk HTTP to the
server started by the ``s3_server`` fixture.
"""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from unimusic import storage
from unimusic.errors import InputError


def _new_bucket() -> str:
    import boto3

    name = f"ut-{uuid.uuid4().hex[:20]}"
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A fresh, empty base folder: a local temp dir or an S3 prefix in a new bucket."""
    if request.param == "local":
        return str(tmp_path / "base")
    request.getfixturevalue("s3_server")
    return f"s3://{_new_bucket()}/base"


def _rel(root: str, paths: list[str]) -> list[str]:
    prefix = (os.path.abspath(root) if not storage.is_remote(root) else root) + "/"
    assert all(p.startswith(prefix) for p in paths), paths
    return [p[len(prefix):] for p in paths]


# -- paths (no I/O) ------------------------------------------------------------


def test_is_remote_and_join():
    assert storage.is_remote("s3://bucket/key")
    assert storage.is_remote("S3://bucket/key")
    assert not storage.is_remote("/data/x.mxl")
    assert not storage.is_remote("relative/s3://x")
    assert storage.join("s3://bucket", "a", "b.txt") == "s3://bucket/a/b.txt"
    assert storage.join("s3://bucket/base/", "/a/", "b.txt") == "s3://bucket/base/a/b.txt"
    assert storage.join("/data", "a", "b.txt") == os.path.join("/data", "a", "b.txt")


@pytest.mark.parametrize(
    "path, problem",
    [
        ("gs://bucket/key", "unsupported URL scheme"),
        ("s3://", "no bucket"),
        ("s3:///key", "no bucket"),
        ("s3://bad_bucket!/key", "invalid S3 bucket name"),
        ("", "empty path"),
    ],
)
def test_malformed_paths_name_the_path(path, problem):
    for fn in (storage.read_bytes, storage.exists, storage.list_files, storage.filesystem, storage.makedirs):
        with pytest.raises(InputError) as err:
            fn(path)
        assert problem in err.value.problem
        if path:
            assert err.value.source == path


def test_glob_regex_semantics():
    rx = storage.glob_regex
    assert rx("a/*.krn").match("a/x.krn")
    assert not rx("a/*.krn").match("a/b/x.krn")  # '*' never crosses '/'
    assert rx("a/**/*.krn").match("a/x.krn")  # '**/' matches zero folders
    assert rx("a/**/*.krn").match("a/b/c/x.krn")
    assert rx("a/**").match("a/b/c")
    assert rx("a/x?.krn").match("a/x1.krn") and not rx("a/x?.krn").match("a/x/.krn")
    assert rx("a/[bc].krn").match("a/c.krn") and not rx("a/[bc].krn").match("a/d.krn")
    assert rx("a/[!bc].krn").match("a/d.krn") and not rx("a/[!bc].krn").match("a/b.krn")
    assert not rx("a/*.krn").match("a/x.krn.bak")
    assert rx("a/(1).krn").match("a/(1).krn")  # regex characters are literal


# -- both backends ---------------------------------------------------------------


def test_write_read_exists(root):
    data = bytes(range(256)) * 5
    path = storage.join(root, "sub", "blob.bin")
    assert not storage.exists(path)
    storage.write_bytes(path, data)  # parent folders are created as needed
    assert storage.exists(path)
    assert storage.exists(storage.join(root, "sub"))  # a folder (S3: a prefix) exists
    assert storage.exists(root)
    assert not storage.exists(storage.join(root, "su"))  # not a prefix match
    assert not storage.exists(storage.join(root, "missing.bin"))
    assert storage.read_bytes(path) == data
    storage.write_bytes(storage.join(root, "empty.txt"), b"")
    assert storage.read_bytes(storage.join(root, "empty.txt")) == b""


def test_overwrite_replaces_whole_content(root):
    path = storage.join(root, "f.txt")
    storage.write_bytes(path, b"x" * 10_000)
    storage.write_bytes(path, b"short")
    assert storage.read_bytes(path) == b"short"
    assert storage.list_files(root) == [path if storage.is_remote(path) else os.path.abspath(path)]


def test_concurrent_readers_see_old_or_new(root):
    """A reader racing a writer sees either the old or the new content, never a mix."""
    path = storage.join(root, "race.bin")
    size = 1 << 20
    versions = [bytes([65 + i]) * size for i in range(4)]
    storage.write_bytes(path, versions[0])
    seen, bad, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            data = storage.read_bytes(path)
            if data not in versions:
                bad.append((len(data), data[:1], data[-1:]))
            else:
                seen.add(data[:1])

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(12):
            storage.write_bytes(path, versions[i % 4])
    finally:
        stop.set()
        t.join()
    assert not bad, f"torn reads: {bad[:3]}"
    assert len(seen) >= 2  # the reader really ran against changing content


def test_list_files_suffixes_recursion_and_globs(root):
    names = ["a.mxl", "b.krn", "sub/c.krn", "sub/deep/d.KRN", "sub/e.txt", "z/f.abc"]
    for name in names:
        storage.write_bytes(storage.join(root, *name.split("/")), name.encode())
    files = storage.list_files(root)
    assert _rel(root, files) == sorted(names)
    for p in files:  # listed paths are full paths that read back
        assert storage.read_bytes(p) == _rel(root, [p])[0].encode()
    assert _rel(root, storage.list_files(root, recursive=False)) == ["a.mxl", "b.krn"]
    assert _rel(root, storage.list_files(root, suffixes=(".krn",))) == ["b.krn", "sub/c.krn", "sub/deep/d.KRN"]
    assert _rel(root, storage.list_files(root, suffixes=(".krn", ".abc"), recursive=False)) == ["b.krn"]
    assert _rel(root, storage.list_files(storage.join(root, "sub"))) == ["sub/c.krn", "sub/deep/d.KRN", "sub/e.txt"]
    # globs: '*' stays in one folder, '**' goes down any number of folders
    assert _rel(root, storage.list_files(storage.join(root, "*.krn"))) == ["b.krn"]
    assert _rel(root, storage.list_files(storage.join(root, "*", "*.krn"))) == ["sub/c.krn"]
    assert _rel(root, storage.list_files(storage.join(root, "**", "*.krn"))) == ["b.krn", "sub/c.krn"]
    assert _rel(root, storage.list_files(storage.join(root, "**", "*"), suffixes=(".krn",))) == [
        "b.krn",
        "sub/c.krn",
        "sub/deep/d.KRN",
    ]
    assert _rel(root, storage.list_files(storage.join(root, "s*b", "[ce].*"))) == ["sub/c.krn", "sub/e.txt"]
    assert storage.list_files(storage.join(root, "*.nothing")) == []
    assert storage.list_files(storage.join(root, "nofolder", "*.krn")) == []
    # a prefix that names one file lists that file
    assert _rel(root, storage.list_files(storage.join(root, "a.mxl"))) == ["a.mxl"]
    assert storage.list_files(storage.join(root, "a.mxl"), suffixes=(".krn",)) == []


def test_missing_file_errors_name_the_path(root):
    storage.makedirs(root)
    storage.write_bytes(storage.join(root, "keep.txt"), b"x")  # the folder / bucket prefix exists
    missing = storage.join(root, "nope", "missing.mxl")
    with pytest.raises(InputError) as err:
        storage.read_bytes(missing)
    assert err.value.source == missing and "no such file" in err.value.problem
    with pytest.raises(InputError) as err:
        storage.read_bytes(storage.join(root, "") + "/")
    assert "director" in err.value.problem or "folder" in err.value.problem


def test_makedirs(root):
    path = storage.join(root, "a", "b")
    storage.makedirs(path)
    storage.makedirs(path)  # idempotent
    if not storage.is_remote(root):
        assert os.path.isdir(path)
        storage.write_bytes(storage.join(root, "file"), b"x")
        with pytest.raises(InputError) as err:
            storage.makedirs(storage.join(root, "file"))
        assert err.value.source == storage.join(root, "file")
        with pytest.raises(InputError):
            storage.write_bytes(storage.join(root, "file", "child.txt"), b"x")


def test_parquet_through_filesystem(root):
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    fs, base = storage.filesystem(storage.join(root, "shards"))
    if not storage.is_remote(root):
        fs.create_dir(base, recursive=True)
    tables = [pa.table({"piece": [f"p{i}-{j}" for j in range(5)], "n": list(range(i * 5, i * 5 + 5))}) for i in range(3)]
    for i, table in enumerate(tables):
        pq.write_table(table, f"{base}/part-{i:05d}.parquet", filesystem=fs)
    assert pq.read_table(f"{base}/part-00001.parquet", filesystem=fs).equals(tables[1])
    everything = pads.dataset(base, filesystem=fs, format="parquet").to_table().sort_by("n")
    assert everything.column("n").to_pylist() == list(range(15))
    listed = storage.list_files(storage.join(root, "shards"), suffixes=(".parquet",))
    assert [p.rsplit("/", 1)[1] for p in listed] == [f"part-{i:05d}.parquet" for i in range(3)]


# -- local only ------------------------------------------------------------------


def test_local_filesystem_and_atomic_failure(tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    fs, p = storage.filesystem(str(tmp_path / "x" / ".." / "y.parquet"))
    assert isinstance(fs, pafs.LocalFileSystem) and p == str(tmp_path / "y.parquet")
    _, rel = storage.filesystem("relative/name.txt")
    assert rel == os.path.abspath("relative/name.txt")
    assert storage.filesystem("file://" + str(tmp_path))[1] == str(tmp_path)

    path = str(tmp_path / "d" / "f.bin")
    storage.write_bytes(path, b"old")
    os.chmod(path, 0o640)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(InputError) as err:
        storage.write_bytes(path, b"new content")
    assert err.value.source == path and "No space left" in err.value.problem
    monkeypatch.undo()
    assert storage.read_bytes(path) == b"old"  # the failed write left the old file intact
    assert os.listdir(tmp_path / "d") == ["f.bin"]  # and no temporary file behind
    storage.write_bytes(path, b"new")
    assert os.stat(path).st_mode & 0o777 == 0o640  # an overwrite keeps the file's mode
    fresh = str(tmp_path / "fresh.txt")
    storage.write_bytes(fresh, b"x")
    assert os.stat(fresh).st_mode & 0o777 == 0o666 & ~storage._UMASK  # not mkstemp's 0600


def test_local_missing_dir_and_directory_errors(tmp_path):
    missing = str(tmp_path / "no" / "such")
    with pytest.raises(InputError) as err:
        storage.list_files(missing)
    assert err.value.source == missing and "no such" in err.value.problem
    with pytest.raises(InputError) as err:
        storage.read_bytes(str(tmp_path))
    assert err.value.source == str(tmp_path) and "directory" in err.value.problem
    with pytest.raises(InputError) as err:
        storage.write_bytes(str(tmp_path), b"x")
    assert "directory" in err.value.problem


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_local_permission_errors(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "f.txt").write_bytes(b"x")
    os.chmod(locked / "f.txt", 0)
    try:
        with pytest.raises(InputError) as err:
            storage.read_bytes(str(locked / "f.txt"))
        assert "permission denied" in err.value.problem and err.value.source == str(locked / "f.txt")
        os.chmod(locked, 0o500)
        with pytest.raises(InputError) as err:
            storage.write_bytes(str(locked / "g.txt"), b"x")
        assert "permission denied" in err.value.problem
    finally:
        os.chmod(locked, 0o700)
        os.chmod(locked / "f.txt", 0o600)


# -- S3 only ---------------------------------------------------------------------


def test_s3_missing_bucket_errors(s3_server):
    path = f"s3://nobucket-{uuid.uuid4().hex[:12]}/scores/a.mxl"
    for call in (
        lambda: storage.read_bytes(path),
        lambda: storage.write_bytes(path, b"x"),
        lambda: storage.list_files(path.rsplit("/", 1)[0]),
        lambda: storage.list_files(path.rsplit("/", 1)[0] + "/*.mxl"),
    ):
        with pytest.raises(InputError) as err:
            call()
        assert err.value.source.startswith(path.rsplit("/", 1)[0])
        assert "bucket" in err.value.problem and "does not exist" in err.value.problem
    assert storage.exists(path) is False
    assert storage.exists(path.split("/scores")[0]) is False
    # an existing bucket with nothing under the prefix is simply empty
    bucket = _new_bucket()
    assert storage.list_files(f"s3://{bucket}/nothing/here") == []
    assert storage.exists(f"s3://{bucket}")


def test_s3_listing_paginates(s3_server, monkeypatch):
    bucket = _new_bucket()
    names = [f"k/{i:03d}.krn" for i in range(7)] + ["k/x.txt"]
    for name in names:
        storage.write_bytes(f"s3://{bucket}/{name}", b"")
    monkeypatch.setattr(storage, "_LIST_PAGE_SIZE", 2)  # several list_objects_v2 pages
    assert storage.list_files(f"s3://{bucket}/k", suffixes=(".krn",)) == [f"s3://{bucket}/{n}" for n in names[:7]]
    assert len(storage.list_files(f"s3://{bucket}/k/*")) == 8


def test_s3_unreachable_endpoint(s3_server, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(InputError) as err:
        storage.read_bytes("s3://somebucket/a.txt")
    assert err.value.source == "s3://somebucket/a.txt" and "cannot reach" in err.value.problem


def test_s3_error_mapping_permission():
    """What S3 answers for a forbidden object becomes a 'permission denied' InputError.

    moto_server does not enforce IAM, so the server's answer is built here.
    """
    from botocore.exceptions import ClientError

    for code, status in (("AccessDenied", 403), ("403", 403)):
        exc = ClientError({"Error": {"Code": code, "Message": "Access Denied"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")
        err = storage._s3_error("s3://bucket/a.mxl", exc, action="read")
        assert isinstance(err, InputError) and err.source == "s3://bucket/a.mxl"
        assert "permission denied" in err.problem


def test_s3_filesystem_settings(s3_server, monkeypatch):
    import pyarrow.fs as pafs

    fs, p = storage.filesystem("s3://bucket/some/key.parquet")
    assert isinstance(fs, pafs.S3FileSystem) and p == "bucket/some/key.parquet"
    assert fs.region == "us-east-1"
    assert storage.filesystem("s3://bucket")[1] == "bucket"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert storage.filesystem("s3://bucket/k")[0].region == "eu-west-1"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert storage.filesystem("s3://bucket/k")[0].region == "us-east-1"


def test_s3_filesystem_carries_static_keys_to_other_processes(s3_server, monkeypatch):
    """A pickled filesystem (what Ray sends to a Train controller or a worker started before the
    settings existed) carries the environment's static keys and still works where the
    environment has none; without static keys it carries none (the standard chain decides)."""
    import pickle

    import boto3
    import pyarrow.fs as pafs

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="pickled-fs")
    fs, root = storage.filesystem("s3://pickled-fs/dir")
    payload = pickle.dumps(fs)
    options = fs.__reduce__()[1][0]
    assert options["access_key"] == os.environ["AWS_ACCESS_KEY_ID"] and options["secret_key"]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    again = pickle.loads(payload)
    with again.open_output_stream(f"{root}/x.txt") as f:
        f.write(b"ok")
    assert again.get_file_info(f"{root}/x.txt").type == pafs.FileType.File
    assert storage.filesystem("s3://pickled-fs/dir")[0].__reduce__()[1][0]["access_key"] is None


def test_ray_data_reads_parquet_from_s3(s3_server, ray_session):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ray = ray_session
    bucket = _new_bucket()
    for i in range(3):
        fs, p = storage.filesystem(f"s3://{bucket}/shards/part-{i}.parquet")
        pq.write_table(pa.table({"shard": [i] * 4, "x": [i * 10 + j for j in range(4)]}), p, filesystem=fs)
    fs, _ = storage.filesystem(f"s3://{bucket}/shards")
    ds = ray.data.read_parquet(f"s3://{bucket}/shards", filesystem=fs)
    rows = sorted((r["shard"], r["x"]) for r in ds.take_all())
    assert rows == [(i, i * 10 + j) for i in range(3) for j in range(4)]
