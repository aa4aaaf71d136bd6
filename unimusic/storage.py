"""Local paths and ``s3://bucket/key`` URLs behind one small API.

* Files: :func:`read_bytes`, :func:`write_bytes` (atomic), :func:`exists`,
  :func:`list_files` (suffix filter, glob patterns), :func:`makedirs`, :func:`join`.
* Columnar data: :func:`filesystem` gives a ``pyarrow.fs`` filesystem and the
  path inside it, for ``pyarrow.parquet`` and ``ray.data.read_parquet(...,
  filesystem=...)``.

S3 uses the standard AWS credential chain (environment, ``~/.aws`` files,
instance/role credentials); nothing here holds credentials. The endpoint can be
overridden with ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (e.g. a local
``moto_server`` or MinIO), the region comes from ``AWS_DEFAULT_REGION`` (then
``AWS_REGION``, default ``us-east-1``). Object operations and listings go
through boto3; ``filesystem()`` builds a pyarrow ``S3FileSystem`` with the same
endpoint and region.

Every failure a user can cause (missing file or bucket, no permission, an
unreachable endpoint, a malformed URL) is an :class:`~unimusic.errors.InputError`
naming the path.

Glob patterns (``*``, ``?``, ``[...]``, and ``**`` for any number of folders)
have the same meaning for local paths and S3 keys: ``*`` never crosses a ``/``
and matches names starting with a dot too.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from unimusic.errors import InputError

if TYPE_CHECKING:  # imported lazily: importing this module stays cheap
    import pyarrow.fs

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_GLOB_CHARS = "*?["
# Temporary files of write_bytes: hidden, with this ending; listings skip them.
_TMP_SUFFIX = ".unimusic-tmp"
DEFAULT_REGION = "us-east-1"
# Keys per list_objects_v2 request (S3's maximum is 1000).
_LIST_PAGE_SIZE = 1000

_umask_lock = threading.Lock()


def _current_umask() -> int:
    with _umask_lock:
        mask = os.umask(0)
        os.umask(mask)
    return mask


_UMASK = _current_umask()


# -- paths ---------------------------------------------------------------------


def _as_str(path) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise InputError(repr(path)[:80], f"expected a path or s3:// URL, got {type(path).__name__}")
    if not path:
        raise InputError("''", "empty path")
    m = _SCHEME.match(path)
    if m:
        scheme = m.group(1).lower()
        if scheme == "file":
            return path[len("file://"):] or "/"
        if scheme != "s3":
            raise InputError(path, f"unsupported URL scheme {scheme!r} (expected a local path or s3://bucket/key)")
    return path


def is_remote(path) -> bool:
    """True for ``s3://`` URLs (the only remote kind supported)."""
    return isinstance(path, str) and path[:5].lower() == "s3://"


def _split_s3(path: str) -> tuple[str, str]:
    rest = path[5:]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InputError(path, "S3 URL has no bucket (expected s3://bucket/key)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-_]{1,254}", bucket):
        raise InputError(path, f"invalid S3 bucket name {bucket!r}")
    return bucket, key


def _s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def join(base, *names: str) -> str:
    """``base/name/...`` for local paths (``os.path.join``) and S3 URLs alike."""
    base = _as_str(base)
    if not is_remote(base):
        return os.path.join(base, *names)
    parts = [base.rstrip("/")]
    for name in names:
        name = str(name).strip("/")
        if name:
            parts.append(name)
    return "/".join(parts)


# -- S3 clients ----------------------------------------------------------------


def _s3_settings() -> tuple[str | None, str]:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or DEFAULT_REGION
    return endpoint, region


_client_lock = threading.Lock()
_clients: dict[str, object] = {}
# Environment variables that change which credentials the standard chain finds.
_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def _s3_client():
    """A boto3 S3 client for the current environment (cached per endpoint/region/credential settings)."""
    endpoint, region = _s3_settings()
    ident = "\0".join([endpoint or "", region] + [os.environ.get(k, "") for k in _CREDENTIAL_ENV])
    key = hashlib.sha256(ident.encode()).hexdigest()
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            client = session.client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60),
            )
            _clients[key] = client
    return client


def filesystem(path) -> tuple["pyarrow.fs.FileSystem", str]:
    """The pyarrow filesystem for ``path`` and the path inside it.

    Local: ``(LocalFileSystem(), absolute path)``. ``s3://bucket/key``:
    ``(S3FileSystem(...), "bucket/key")`` with the standard credential chain and
    the endpoint/region from the environment (see the module docstring).
    """
    import pyarrow.fs as pafs

    path = _as_str(path)
    if not is_remote(path):
        return pafs.LocalFileSystem(), os.path.abspath(path)
    bucket, key = _split_s3(path)
    endpoint, region = _s3_settings()
    kwargs: dict = {"region": region}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parts.netloc:
            raise InputError(endpoint, "AWS_ENDPOINT_URL is not a URL like http://host:port")
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kwargs["scheme"] = parts.scheme or "https"
    # Static keys in the environment travel with the filesystem object (it is pickled into
    # Ray processes, e.g. a Train controller started before these settings existed);
    # without them every process uses the standard chain (IAM role, profile...).
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"])
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    try:
        fs = pafs.S3FileSystem(**kwargs)
    except Exception as exc:  # pyarrow raises OSError/ArrowInvalid for bad settings
        raise InputError(path, f"cannot set up S3 access ({exc})") from None
    return fs, f"{bucket}/{key}".rstrip("/")


def _s3_error(path: str, exc: Exception, *, action: str) -> InputError:
    """Translate a boto3/botocore exception into an InputError naming ``path``."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.NoCredentialsError):
        return InputError(path, "no AWS credentials found (environment, ~/.aws files or instance role)")
    if isinstance(exc, bex.EndpointConnectionError):
        endpoint, _ = _s3_settings()
        return InputError(path, f"cannot reach the S3 endpoint{f' {endpoint}' if endpoint else ''} ({exc})")
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        bucket = _split_s3(path)[0]
        if code == "NoSuchBucket":
            return InputError(path, f"S3 bucket {bucket!r} does not exist")
        if code in ("NoSuchKey", "404", "NotFound"):
            return InputError(path, "no such file")
        if code in ("AccessDenied", "403", "AllAccessDisabled", "Forbidden") or status == 403:
            return InputError(path, f"permission denied ({action})")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return InputError(path, f"S3 rejected the credentials ({code})")
        message = err.get("Message") or str(exc)
        return InputError(path, f"S3 {action} failed ({code or status}: {message})")
    if isinstance(exc, bex.BotoCoreError):
        return InputError(path, f"S3 {action} failed ({exc})")
    raise exc


def _s3_call(path: str, action: str, fn, **kwargs):
    from botocore import exceptions as bex

    try:
        return fn(**kwargs)
    except (bex.ClientError, bex.BotoCoreError) as exc:
        raise _s3_error(path, exc, action=action) from None


def _bucket_exists(client, bucket: str, path: str) -> bool:
    from botocore import exceptions as bex

    try:
        client.head_bucket(Bucket=bucket)
        return True
    except bex.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise _s3_error(path, exc, action="check bucket") from None
    except bex.BotoCoreError as exc:
        raise _s3_error(path, exc, action="check bucket") from None


# -- files ---------------------------------------------------------------------


def exists(path) -> bool:
    """Whether a file or folder exists (on S3: an object, or any object under ``key/``).

    A missing bucket is ``False``; no permission raises ``InputError``.
    """
    path = _as_str(path)
    if not is_remote(path):
        return os.path.exists(path)
    from botocore import exceptions as bex

    bucket, key = _split_s3(path)
    client = _s3_client()
    if not key.strip("/"):
        return _bucket_exists(client, bucket, path)
    if not key.endswith("/"):
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except bex.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchKey", "NotFound"):
                raise _s3_error(path, exc, action="check object") from None
        except bex.BotoCoreError as exc:
            raise _s3_error(path, exc, action="check object") from None
    try:
        resp = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
    except bex.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) == "NoSuchBucket":
            return False
        raise _s3_error(path, exc, action="list") from None
    except bex.BotoCoreError as exc:
        raise _s3_error(path, exc, action="list") from None
    return resp.get("KeyCount", 0) > 0


def read_bytes(path) -> bytes:
    """The whole file. Missing file/bucket, a folder, or no permission: ``InputError``."""
    path = _as_str(path)
    if not is_remote(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise InputError(path, "no such file") from None
        except IsADirectoryError:
            raise InputError(path, "is a directory, expected a file") from None
        except PermissionError:
            raise InputError(path, "permission denied (read)") from None
        except OSError as exc:
            raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    bucket, key = _split_s3(path)
    if not key or key.endswith("/"):
        raise InputError(path, "S3 URL names a bucket or folder, expected a file")
    client = _s3_client()
    resp = _s3_call(path, "read", client.get_object, Bucket=bucket, Key=key)
    try:
        return resp["Body"].read()
    except Exception as exc:  # a connection dropped mid-body
        raise InputError(path, f"S3 read failed ({exc})") from None


def write_bytes(path, data: bytes) -> None:
    """Write the whole file atomically: readers see the old or the new content, never a part.

    Local: a temporary file in the same folder, fsync, ``os.replace``; missing
    parent folders are created. S3: one PUT (atomic by S3's semantics).
    """
    path = _as_str(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(path, f"data to write must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if is_remote(path):
        bucket, key = _split_s3(path)
        if not key or key.endswith("/"):
            raise InputError(path, "S3 URL names a bucket or folder, expected a file")
        client = _s3_client()
        _s3_call(path, "write", client.put_object, Bucket=bucket, Key=key, Body=data)
        return
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    if os.path.isdir(target):
        raise InputError(path, "is a directory, cannot write a file there")
    makedirs(parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix="." + os.path.basename(target) + ".", suffix=_TMP_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
    except PermissionError:
        raise InputError(path, "permission denied (write)") from None
    except OSError as exc:
        raise InputError(path, f"cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def makedirs(path) -> None:
    """Create a local folder and its parents (no error if it exists). No-op on S3."""
    path = _as_str(path)
    if is_remote(path):
        _split_s3(path)  # still refuse malformed URLs
        return
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise InputError(path, "exists and is not a directory") from None
    except NotADirectoryError:
        raise InputError(path, "a parent of this path is a file, not a directory") from None
    except PermissionError:
        raise InputError(path, "permission denied (create directory)") from None
    except OSError as exc:
        raise InputError(path, f"cannot create directory ({exc.strerror or exc})") from None


# -- listing -------------------------------------------------------------------


def _has_glob(s: str) -> bool:
    return any(c in s for c in _GLOB_CHARS)


def glob_regex(pattern: str) -> re.Pattern:
    """A regex for a glob pattern over ``/``-separated paths (``**`` = any folders)."""
    i, n, out = 0, len(pattern), []
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                j = i + 2
                at_segment_start = i == 0 or pattern[i - 1] == "/"
                if at_segment_start and j < n and pattern[j] == "/":
                    out.append("(?:[^/]*/)*")  # '**/': zero or more folders
                    i = j + 1
                    continue
                if at_segment_start and j == n:
                    out.append(".*")  # trailing '**': everything below
                    i = j
                    continue
                out.append("[^/]*")  # '**' inside a name acts as '*'
                i = j
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal '['
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _literal_prefix(pattern: str) -> str:
    cut = min((pattern.find(c) for c in _GLOB_CHARS if c in pattern), default=len(pattern))
    return pattern[:cut]


def _suffix_ok(name: str, suffixes: tuple[str, ...]) -> bool:
    return not suffixes or name.lower().endswith(suffixes)


def _norm_suffixes(suffixes) -> tuple[str, ...]:
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    try:
        out = tuple(str(s).lower() for s in suffixes)
    except TypeError:
        raise InputError("suffixes", f"expected a tuple of strings, got {suffixes!r}") from None
    return out


def list_files(prefix, *, suffixes: tuple[str, ...] = (), recursive: bool = True) -> list[str]:
    """Sorted full paths of the files under a folder / S3 prefix, or matching a glob.

    * ``prefix`` a folder (``/data/scores``, ``s3://b/scores``): its files, and with
      ``recursive`` those of every subfolder. On S3 ``s3://b/scores`` lists keys
      under ``scores/``; a prefix that names one file gives that file.
    * ``prefix`` a glob (``/data/*.mxl``, ``s3://b/scores/**/*.krn``): the files it
      matches (the pattern decides the depth; ``recursive`` is not used).
    * ``suffixes``: keep names ending with one of them (case-insensitive).

    A missing local folder or S3 bucket raises ``InputError``; a glob that
    matches nothing, or an S3 prefix with no objects, gives ``[]``.
    """
    prefix = _as_str(prefix)
    sfx = _norm_suffixes(suffixes)
    if is_remote(prefix):
        return _list_s3(prefix, sfx, recursive)
    return _list_local(prefix, sfx, recursive)


def _walk_files(root: str, recursive: bool):
    def onerror(exc):
        if isinstance(exc, PermissionError):
            raise InputError(exc.filename or root, "permission denied (list)")

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        for name in filenames:
            if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                continue
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                yield full
        if not recursive:
            break


def _list_local(prefix: str, sfx: tuple[str, ...], recursive: bool) -> list[str]:
    if _has_glob(prefix):
        pattern = os.path.abspath(prefix)
        if os.sep != "/":  # pragma: no cover - POSIX only in practice
            pattern = pattern.replace(os.sep, "/")
        regex = glob_regex(pattern)
        literal = _literal_prefix(pattern)
        root = literal if literal.endswith("/") else (os.path.dirname(literal) or "/")
        if not os.path.isdir(root):
            return []
        deep = "/" in pattern[len(root):].rstrip("/") or "**" in pattern
        out = [
            f
            for f in _walk_files(root, recursive=deep)
            if regex.match(f.replace(os.sep, "/")) and _suffix_ok(f, sfx)
        ]
        return sorted(out)
    path = os.path.abspath(prefix)
    if os.path.isfile(path):
        return [path] if _suffix_ok(path, sfx) else []
    if not os.path.exists(path):
        raise InputError(prefix, "no such file or directory")
    if not os.path.isdir(path):
        raise InputError(prefix, "not a file or directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise InputError(prefix, "permission denied (list)")
    return sorted(f for f in _walk_files(path, recursive) if _suffix_ok(f, sfx))


def _iter_s3_keys(client, path: str, bucket: str, prefix: str, delimiter: str | None):
    paginator = client.get_paginator("list_objects_v2")
    kwargs = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": _LIST_PAGE_SIZE}}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    from botocore import exceptions as bex

    try:
        for page in paginator.paginate(**kwargs):
            for obj in page.get("Contents", ()):
                yield obj["Key"]
    except (bex.ClientError, bex.BotoCoreError) as exc:
        raise _s3_error(path, exc, action="list") from None


def _list_s3(prefix: str, sfx: tuple[str, ...], recursive: bool) -> list[str]:
    bucket, key = _split_s3(prefix)
    client = _s3_client()
    if _has_glob(key):
        regex = glob_regex(key)
        literal = _literal_prefix(key)
        keys = [k for k in _iter_s3_keys(client, prefix, bucket, literal, None) if regex.match(k)]
    else:
        folder = key.rstrip("/") + "/" if key.strip("/") else ""
        keys = list(_iter_s3_keys(client, prefix, bucket, folder, None if recursive else "/"))
        if not keys and key and not key.endswith("/") and _object_exists(client, bucket, key, prefix):
            keys = [key]  # the prefix names a single object
    out = [_s3_url(bucket, k) for k in keys if not k.endswith("/") and _suffix_ok(k, sfx)]
    return sorted(out)


def _object_exists(client, bucket: str, key: str, path: str) -> bool:
    from botocore import exceptions as bex

    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except bex.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise _s3_error(path, exc, action="check object") from None
    except bex.BotoCoreError as exc:
        raise _s3_error(path, exc, action="check object") from None
