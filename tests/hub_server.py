"""A small, self-contained Hugging Face Hub-protocol HTTP server for tests (stdlib only).

It implements exactly the subset of the Hub HTTP API that ``huggingface_hub`` (and, through it, ``datasets``,
``transformers`` and ``diffusers``) use to push a repository and to download it again, for repo types ``model`` and
``dataset``. It listens on 127.0.0.1 only and keeps everything in memory plus a temporary directory:

* repositories are a dict of commits (40-hex sha1 ids, each holding the full ``path -> file`` tree) and a ``main``
  branch pointer; new repos get an initial commit holding a ``.gitattributes`` (like the real Hub);
* file contents are stored content-addressed (by sha256) in ``<root>/blobs``, whether they came inline in a commit
  (regular git files) or through the LFS protocol;
* LFS objects are uploaded with the "basic" git-lfs transfer (batch call, then one PUT per object, verified by
  sha256) and downloaded through a redirect to a second listener standing in for the CDN (another port, hence
  another origin: the client keeps the metadata of the 302 answer and drops its Authorization header, as with the
  real CDN).

Xet is never advertised: no ``X-Xet-*`` headers, no ``xetHash`` in listings, no ``Link: ...xet-auth`` header. The
client decides to use Xet for uploads only from ``HF_HUB_DISABLE_XET`` / the ``hf_xet`` package being installed
(``huggingface_hub.utils.is_xet_available``), so tests must set ``HF_HUB_DISABLE_XET=1``; for downloads it would use
Xet only if the server sent ``X-Xet-Hash`` headers, which this server never does.

Endpoints (``{t}`` is ``model`` or ``dataset``; ``{prefix}`` is empty for models and ``datasets/`` for datasets):

=============================================================  ===================================================
``GET  /api/whoami-v2``                                        ``HfApi.whoami`` (push_to_hub builds namespaces)
``GET  /api/agent-harnesses``                                  user-agent harness registry (empty)
``POST /api/repos/create``                                     ``create_repo`` (409 + ``url`` when it exists)
``DELETE /api/repos/delete``                                   ``delete_repo``
``POST /api/validate-yaml``                                    ``create_commit`` when a README.md is committed
``GET  /api/{t}s/{id}[/revision/{rev}]``                       ``repo_info`` / ``model_info`` / ``dataset_info``
``GET  /api/{t}s/{id}/tree/{rev}[/{path}]``                    ``list_repo_tree`` / ``list_repo_files`` / HfFileSystem
``POST /api/{t}s/{id}/paths-info/{rev}``                       ``get_paths_info`` / HfFileSystem ``info``
``GET  /api/{t}s/{id}/refs``                                   ``list_repo_refs``
``GET  /api/{t}s/{id}/commits/{rev}``                          ``list_repo_commits``
``POST /api/{t}s/{id}/branch/{branch}``                        ``create_branch``
``POST /api/{t}s/{id}/preupload/{rev}``                        ``create_commit`` (regular vs LFS upload mode)
``POST /api/{t}s/{id}/commit/{rev}``                           ``create_commit`` (NDJSON operations)
``POST /{prefix}{id}.git/info/lfs/objects/batch``              ``create_commit`` LFS uploads (basic transfer)
``PUT  /lfs-upload/{sha256}``                                  LFS object upload (sha256-verified)
``POST /{prefix}{id}.git/info/lfs/objects/verify``             LFS verify action
``HEAD|GET /{prefix}{id}/resolve/{rev}/{path}``                ``hf_hub_download``, ``snapshot_download``, HfFileSystem
``HEAD|GET /cdn/{sha256}`` (CDN listener)                      LFS blob download (Range supported)
``*    /api/{t}s/{id}/xet-{read,write}-token/...``               400 "set HF_HUB_DISABLE_XET=1" (Xet unsupported)
=============================================================  ===================================================

Errors carry the ``X-Error-Code`` header that ``huggingface_hub.utils.hf_raise_for_status`` maps to exceptions:
``RepoNotFound`` -> ``RepositoryNotFoundError``, ``RevisionNotFound`` -> ``RevisionNotFoundError``, ``EntryNotFound``
-> ``(Remote)EntryNotFoundError``. Any ``Bearer`` token is accepted.

Switches for failure tests: ``server.refuse_writes = True`` makes every write endpoint answer 403 (a status the
clients do not retry: 5xx would be retried with exponential backoff); ``server.stop()`` / ``server.start()`` close and
reopen the listeners on the same ports (the endpoint URL is baked into ``huggingface_hub.constants`` at import time).
"""

from __future__ import annotations

import base64
import email.utils
import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


DEFAULT_USER = "dakter-tester"
REPO_TYPES = ("model", "dataset")
URL_PREFIX = {"model": "", "dataset": "datasets/"}
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files >= 10 MB with LFS whatever their type

# Content of the `.gitattributes` created with every new repo: same spirit as the real Hub default (binary and
# weight formats are LFS-tracked). The preupload endpoint reads the `.gitattributes` of the target revision.
DEFAULT_GITATTRIBUTES = (
    "\n".join(
        f"{pattern} filter=lfs diff=lfs merge=lfs -text"
        for pattern in (
            "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lz4",
            "*.mds", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet",
            "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*",
            "*.tar", "*.tar.*", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
            "*.png", "*.jpg", "*.jpeg", "*.webp", "*.tif", "*.tiff",
        )
    )
    + "\n"
)


def git_blob_oid(content: bytes) -> str:
    """Git object id of a blob (``sha1("blob <size>\\0" + content)``), as the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file committed in git in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000Z"


@dataclass(frozen=True)
class RepoFile:
    """One file of a commit tree. ``sha256`` is the content address in the blob store (for LFS files, the LFS oid)."""

    path: str
    size: int
    sha256: str
    git_oid: str  # git blob id: of the content (regular file) or of the LFS pointer (LFS file)
    lfs: bool
    pointer_size: int = 0
    last_commit: str = ""  # id of the commit that last touched the file


@dataclass
class Commit:
    oid: str
    parents: list[str]
    title: str
    message: str
    date: float
    files: dict[str, RepoFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: float
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class HubError(Exception):
    """An HTTP error answer: status, ``X-Error-Code`` (optional) and message (header + JSON body)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _repo_not_found(repo_type: str, repo_id: str) -> HubError:
    return HubError(404, "Repository not found", "RepoNotFound")


class HubState:
    """Thread-safe in-memory Hub: repos and commits in dicts, contents in a content-addressed blob directory."""

    def __init__(self, root: str, user: str = DEFAULT_USER):
        self.root = root
        self.user = user
        self.blob_dir = os.path.join(root, "blobs")
        os.makedirs(self.blob_dir, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self._counter = 0

    # -- blobs -------------------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> str:
        return os.path.join(self.blob_dir, sha256)

    def has_blob(self, sha256: str) -> bool:
        return len(sha256) == 64 and os.path.isfile(self.blob_path(sha256))

    def put_blob(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        if not self.has_blob(sha):
            self._atomic_write(sha, content)
        return sha

    def _atomic_write(self, sha: str, content: bytes) -> None:
        tmp = os.path.join(self.blob_dir, f".{sha}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(content)
        os.replace(tmp, self.blob_path(sha))

    def read_blob(self, sha256: str) -> bytes:
        with open(self.blob_path(sha256), "rb") as f:
            return f.read()

    # -- repos ---------------------------------------------------------------------------------------------------
    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise _repo_not_found(repo_type, repo_id)
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        """Create a repo with an initial commit holding the default `.gitattributes` (as the Hub does)."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=time.time())
            self.repos[(repo_type, repo_id)] = repo
            content = DEFAULT_GITATTRIBUTES.encode()
            entry = self._regular_file(".gitattributes", content)
            self._new_commit(repo, "main", "initial commit", "", {".gitattributes": entry})
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            if self.repos.pop((repo_type, repo_id), None) is None:
                raise _repo_not_found(repo_type, repo_id)

    def resolve(self, repo: Repo, revision: str) -> Commit:
        """Resolve a branch, tag, full commit sha or unique sha prefix (>= 7 chars) to a commit."""
        with self.lock:
            if revision in repo.branches:
                return repo.commits[repo.branches[revision]]
            if revision in repo.tags:
                return repo.commits[repo.tags[revision]]
            for name in (revision.removeprefix("refs/heads/"), revision.removeprefix("refs/tags/")):
                if name != revision and (name in repo.branches or name in repo.tags):
                    return self.resolve(repo, name)
            rev = revision.lower()
            if rev in repo.commits:
                return repo.commits[rev]
            if 7 <= len(rev) < 40 and all(c in "0123456789abcdef" for c in rev):
                matches = [oid for oid in repo.commits if oid.startswith(rev)]
                if len(matches) == 1:
                    return repo.commits[matches[0]]
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _regular_file(self, path: str, content: bytes) -> RepoFile:
        sha = self.put_blob(content)
        return RepoFile(path=path, size=len(content), sha256=sha, git_oid=git_blob_oid(content), lfs=False)

    def _lfs_file(self, path: str, sha256: str, size: int) -> RepoFile:
        pointer = lfs_pointer(sha256, size)
        return RepoFile(
            path=path, size=size, sha256=sha256, git_oid=git_blob_oid(pointer), lfs=True, pointer_size=len(pointer)
        )

    def _new_commit(self, repo: Repo, branch: str, title: str, message: str, files: dict[str, RepoFile]) -> Commit:
        with self.lock:
            parent = repo.branches.get(branch)
            self._counter += 1
            now = time.time()
            seed = json.dumps(
                [repo.repo_type, repo.repo_id, parent, title, message, now, self._counter,
                 sorted((p, f.git_oid) for p, f in files.items())]
            )
            oid = hashlib.sha1(seed.encode()).hexdigest()
            previous = repo.commits[parent].files if parent else {}
            files = {
                p: (previous[p] if p in previous and previous[p].git_oid == f.git_oid else _with_commit(f, oid))
                for p, f in files.items()
            }
            commit = Commit(oid=oid, parents=[parent] if parent else [], title=title, message=message, date=now,
                            files=files)
            repo.commits[oid] = commit
            repo.branches[branch] = oid
            return commit

    def commit(self, repo: Repo, branch: str, header: dict, operations: list[dict]) -> Commit:
        """Apply NDJSON commit operations (``file`` / ``lfsFile`` / ``deletedFile`` / ``deletedFolder``) atomically."""
        with self.lock:
            if branch not in repo.branches:
                if branch in repo.commits or branch in repo.tags:
                    raise HubError(400, f"Cannot commit to '{branch}': not a branch")
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and parent != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for op in operations:
                key, value = op.get("key"), op.get("value") or {}
                path = value.get("path", "")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding for {path}")
                    files[path] = self._regular_file(path, base64.b64decode(value.get("content", "")))
                elif key == "lfsFile":
                    oid = value.get("oid", "")
                    if value.get("algo", "sha256") != "sha256" or not self.has_blob(oid):
                        raise HubError(400, f"LFS object {oid} for '{path}' was not uploaded")
                    size = os.path.getsize(self.blob_path(oid))
                    if value.get("size") is not None and int(value["size"]) != size:
                        raise HubError(400, f"Size mismatch for LFS object {oid} ('{path}')")
                    files[path] = self._lfs_file(path, oid, size)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    raise HubError(400, f"Unsupported commit operation: {key!r}")
            return self._new_commit(repo, branch, header.get("summary") or "Commit", header.get("description", ""),
                                    files)

    def create_branch(self, repo: Repo, branch: str, start: str | None) -> None:
        with self.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = self.resolve(repo, start or "main").oid

    def lfs_patterns(self, commit: Commit) -> list[str]:
        """LFS-tracked patterns of a commit's `.gitattributes`."""
        entry = commit.files.get(".gitattributes")
        if entry is None:
            return []
        patterns = []
        for line in self.read_blob(entry.sha256).decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) > 1 and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns


def _with_commit(f: RepoFile, oid: str) -> RepoFile:
    return RepoFile(path=f.path, size=f.size, sha256=f.sha256, git_oid=f.git_oid, lfs=f.lfs,
                    pointer_size=f.pointer_size, last_commit=oid)


def _matches_gitattributes(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern.replace("**/", "*")):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _tree_oid(entries: list[tuple[str, str]]) -> str:
    return hashlib.sha1(json.dumps(sorted(entries)).encode()).hexdigest()


class HubServer:
    """Owns the state and the two listeners (Hub API + "CDN"). Use ``start()``, ``stop()``, ``close()``."""

    def __init__(self, root: str | None = None, host: str = "127.0.0.1", port: int = 0, cdn_port: int = 0,
                 user: str = DEFAULT_USER):
        if host not in ("127.0.0.1",):
            raise ValueError("The test Hub server only listens on 127.0.0.1")
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="dakter-hub-server-")
        self.state = HubState(self.root, user=user)
        self.host, self.port, self.cdn_port = host, port, cdn_port
        self.refuse_writes = False
        self.refuse_status = 403
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) log, for tests and debugging
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []

    # -- URLs ----------------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The value to put in ``HF_ENDPOINT``."""
        return f"http://{self.host}:{self.port}"

    url = endpoint

    @property
    def cdn_endpoint(self) -> str:
        return f"http://{self.host}:{self.cdn_port}"

    @property
    def running(self) -> bool:
        return bool(self._servers)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> "HubServer":
        """Start (or restart, on the same ports) both listeners in daemon threads."""
        if self._servers:
            return self
        api = _make_server(self.host, self.port, self, cdn=False)
        cdn = _make_server(self.host, self.cdn_port, self, cdn=True)
        self.port, self.cdn_port = api.server_address[1], cdn.server_address[1]
        self._servers = [api, cdn]
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                 name=f"hub-server-{srv.server_address[1]}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Close both listeners: further requests get "connection refused" until ``start()``."""
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers, self._threads = [], []

    def close(self) -> None:
        """Stop and delete the storage directory (if the server created it)."""
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def reset(self) -> None:
        """Forget all repos (blobs are kept: they are content-addressed)."""
        with self.state.lock:
            self.state.repos.clear()
        self.refuse_writes = False
        self.requests.clear()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers for tests ---------------------------------------------------------------------------------------
    def repo_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Contents of all files of a repo at a revision (read directly from the server state)."""
        with self.state.lock:
            commit = self.state.resolve(self.state.get_repo(repo_type, repo_id), revision)
            return {p: self.state.read_blob(f.sha256) for p, f in commit.files.items()}

    def head(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> str:
        with self.state.lock:
            return self.state.get_repo(repo_type, repo_id).branches[branch]


def _make_server(host: str, port: int, hub: HubServer, cdn: bool) -> ThreadingHTTPServer:
    handler = type("BoundHubHandler", (_HubHandler,), {"hub": hub, "is_cdn": cdn})
    srv = ThreadingHTTPServer((host, port), handler)
    srv.daemon_threads = True
    return srv


class _HubHandler(BaseHTTPRequestHandler):
    """Request router. HTTP/1.0: one request per connection, so ``stop()`` leaves no kept-alive connection behind."""

    hub: HubServer
    is_cdn: bool
    server_version = "dakter-test-hub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str | None = None,
              content_length: int | None = None) -> None:
        # Logged before anything is sent: a client may act on the headers (a HEAD) before this thread runs on.
        self.hub.requests.append((self.command, self.path, status))
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers, "application/json; charset=utf-8")

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json({"error": err.message}, err.status, headers)

    def _dispatch(self) -> None:
        try:
            self._route()
        except HubError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a server bug: report it clearly to the client
            self._error(HubError(500, f"Test Hub server error: {type(exc).__name__}: {exc}"))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # -- routing ---------------------------------------------------------------------------------------------------
    def _route(self) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        raw = [s for s in split.path.split("/")]
        segs = raw[1:] if raw and raw[0] == "" else raw
        m = self.command
        if self.is_cdn:
            if m in ("GET", "HEAD") and len(segs) == 2 and segs[0] == "cdn":
                return self._cdn_blob(segs[1])
            raise HubError(404, "Not found")

        if segs and segs[0] == "api":
            return self._route_api(m, segs[1:])
        if m == "PUT" and len(segs) == 2 and segs[0] == "lfs-upload":
            return self._lfs_put(segs[1])
        repo_type = "model"
        if segs and segs[0] == "datasets":
            repo_type, segs = "dataset", segs[1:]
        if len(segs) >= 2 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"] and m == "POST":
            repo_id = f"{unquote(segs[0])}/{unquote(segs[1][:-4])}"
            if segs[5:] == ["batch"]:
                return self._lfs_batch(repo_type, repo_id)
            if segs[5:] == ["verify"]:
                return self._lfs_verify(repo_type, repo_id)
        if len(segs) >= 4 and segs[2] == "resolve" and m in ("GET", "HEAD"):
            repo_id = f"{unquote(segs[0])}/{unquote(segs[1])}"
            revision, rest = _take_revision(segs[3:])
            return self._resolve(repo_type, repo_id, revision, unquote("/".join(rest)))
        raise HubError(404, f"Not found: {m} {split.path}")

    def _route_api(self, m: str, segs: list[str]) -> None:
        if segs == ["whoami-v2"] and m == "GET":
            return self._whoami()
        if segs == ["agent-harnesses"] and m == "GET":
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if segs == ["validate-yaml"] and m == "POST":
            self._read_body()
            return self._json({"errors": [], "warnings": []})
        if segs == ["repos", "create"] and m == "POST":
            return self._create_repo()
        if segs == ["repos", "delete"] and m in ("DELETE", "POST"):
            return self._delete_repo()
        if len(segs) >= 3 and segs[0] in ("models", "datasets"):
            repo_type = segs[0][:-1]
            repo_id = f"{unquote(segs[1])}/{unquote(segs[2])}"
            rest = segs[3:]
            if not rest and m == "GET":
                return self._repo_info(repo_type, repo_id, "main")
            if rest and rest[0] == "revision" and len(rest) >= 2 and m == "GET":
                revision, _ = _take_revision(rest[1:])
                return self._repo_info(repo_type, repo_id, revision)
            if rest and rest[0] == "tree" and len(rest) >= 2 and m == "GET":
                revision, path = _take_revision(rest[1:])
                return self._tree(repo_type, repo_id, revision, unquote("/".join(path)))
            if rest and rest[0] == "paths-info" and len(rest) >= 2 and m == "POST":
                revision, _ = _take_revision(rest[1:])
                return self._paths_info(repo_type, repo_id, revision)
            if rest == ["refs"] and m == "GET":
                return self._refs(repo_type, repo_id)
            if rest and rest[0] == "commits" and len(rest) >= 2 and m == "GET":
                revision, _ = _take_revision(rest[1:])
                return self._commits(repo_type, repo_id, revision)
            if rest and rest[0] == "branch" and len(rest) >= 2 and m == "POST":
                return self._create_branch(repo_type, repo_id, unquote("/".join(rest[1:])))
            if rest and rest[0] == "preupload" and len(rest) >= 2 and m == "POST":
                revision, _ = _take_revision(rest[1:])
                return self._preupload(repo_type, repo_id, revision)
            if rest and rest[0] in ("xet-read-token", "xet-write-token"):
                raise HubError(400, "Xet is not supported by the test Hub server: set HF_HUB_DISABLE_XET=1 before "
                                    "huggingface_hub is imported")
            if rest and rest[0] == "commit" and len(rest) >= 2 and m == "POST":
                revision, _ = _take_revision(rest[1:])
                return self._commit(repo_type, repo_id, revision)
        raise HubError(404, f"Not found: {m} /api/{'/'.join(segs)}")

    # -- auth & repos ----------------------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.hub.refuse_writes:
            raise HubError(self.hub.refuse_status, "Write access refused by the test Hub server (refuse_writes=True)")

    def _whoami(self) -> None:
        """``HfApi.whoami``: any Bearer token is valid and belongs to the test user."""
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")
        user = self.hub.state.user
        self._json({
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user,
            "fullname": "Dakter Tester", "email": f"{user}@example.invalid", "emailVerified": True,
            "isPro": False, "canPay": False, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
        })

    def _create_repo(self) -> None:
        """``HfApi.create_repo``: body ``{name, organization, type, visibility|private}``."""
        self._check_writable()
        payload = json.loads(self._read_body() or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Repo type {repo_type!r} is not supported by the test Hub server")
        namespace = payload.get("organization") or self.hub.state.user
        repo_id = f"{namespace}/{payload['name']}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{self.hub.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"
        try:
            self.hub.state.create_repo(repo_type, repo_id, private)
        except HubError as err:
            if err.status == 409:  # `exist_ok=True` reads `url` from the 409 body
                return self._json({"error": err.message, "url": url}, 409, {"X-Error-Message": err.message})
            raise
        self._json({"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def _delete_repo(self) -> None:
        """``HfApi.delete_repo``."""
        self._check_writable()
        payload = json.loads(self._read_body() or b"{}")
        namespace = payload.get("organization") or self.hub.state.user
        self.hub.state.delete_repo(payload.get("type") or "model", f"{namespace}/{payload['name']}")
        self._json({})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        """``repo_info`` / ``model_info`` / ``dataset_info``: ``sha`` and ``siblings`` (with sizes/LFS if ``blobs``)."""
        state = self.hub.state
        with state.lock:
            repo = state.get_repo(repo_type, repo_id)
            commit = state.resolve(repo, revision)
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            f = commit.files[path]
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                sib.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    sib["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": f.pointer_size}
            siblings.append(sib)
        namespace = repo_id.split("/")[0]
        info = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24], "id": repo_id,
            "author": namespace, "sha": commit.oid, "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at), "private": repo.private, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        self._json(info)

    # -- listing -------------------------------------------------------------------------------------------------
    def _file_entry(self, f: RepoFile, commit: Commit, expand: bool) -> dict:
        entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
        if expand:
            entry["lastCommit"] = self._last_commit(f.last_commit or commit.oid)
            entry["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None},
                                           "pickleImportScan": None}
        return entry

    def _last_commit(self, oid: str) -> dict:
        for repo in self.hub.state.repos.values():
            if oid in repo.commits:
                c = repo.commits[oid]
                return {"id": c.oid, "title": c.title, "date": _iso(c.date)}
        return {"id": oid, "title": "", "date": _iso(0)}

    def _dir_entry(self, path: str, commit: Commit, expand: bool) -> dict:
        prefix = path + "/"
        children = [(p, f.git_oid) for p, f in commit.files.items() if p.startswith(prefix)]
        entry: dict[str, Any] = {"type": "directory", "oid": _tree_oid(children), "size": 0, "path": path}
        if expand:
            last = max((commit.files[p] for p, _ in children), key=lambda f: f.last_commit, default=None)
            entry["lastCommit"] = self._last_commit(last.last_commit if last and last.last_commit else commit.oid)
        return entry

    @staticmethod
    def _dirs_of(commit: Commit) -> set[str]:
        dirs = set()
        for p in commit.files:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        """``list_repo_tree`` (``recursive``, ``expand``): one page, directories first, then files."""
        state = self.hub.state
        with state.lock:
            commit = state.resolve(state.get_repo(repo_type, repo_id), revision)
            path = path.strip("/")
            recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
            expand = self.query.get("expand", ["false"])[0].lower() in ("1", "true")
            dirs = self._dirs_of(commit)
            if path and path not in dirs:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound",
                               {"X-Repo-Commit": commit.oid})
            prefix = path + "/" if path else ""

            def wanted(p: str) -> bool:
                return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

            out = [self._dir_entry(d, commit, expand) for d in sorted(dirs) if wanted(d)]
            out += [self._file_entry(commit.files[p], commit, expand) for p in sorted(commit.files) if wanted(p)]
        self._json(out)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        """``get_paths_info``: form body ``paths=...&paths=...&expand=...``; unknown paths are left out."""
        body = self._read_body().decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            data = json.loads(body or "{}")
            paths, expand = data.get("paths", []), bool(data.get("expand"))
        else:
            form = parse_qs(body)
            paths = form.get("paths", [])
            expand = form.get("expand", ["False"])[0].lower() in ("1", "true")
        state = self.hub.state
        with state.lock:
            commit = state.resolve(state.get_repo(repo_type, repo_id), revision)
            dirs = self._dirs_of(commit)
            out = []
            for p in paths if isinstance(paths, list) else [paths]:
                p = p.strip("/")
                if p in commit.files:
                    out.append(self._file_entry(commit.files[p], commit, expand))
                elif p in dirs:
                    out.append(self._dir_entry(p, commit, expand))
        self._json(out)

    def _refs(self, repo_type: str, repo_id: str) -> None:
        """``list_repo_refs``."""
        repo = self.hub.state.get_repo(repo_type, repo_id)
        self._json({
            "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": o} for b, o in repo.branches.items()],
            "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": o} for t, o in repo.tags.items()],
            "converts": [], "pullRequests": [],
        })

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        """``list_repo_commits``: first-parent history, newest first."""
        state = self.hub.state
        with state.lock:
            repo = state.get_repo(repo_type, repo_id)
            c: Commit | None = state.resolve(repo, revision)
            out = []
            while c is not None:
                out.append({"id": c.oid, "title": c.title, "message": c.message, "date": _iso(c.date),
                            "authors": [{"user": state.user, "avatar": None}]})
                c = repo.commits[c.parents[0]] if c.parents else None
        self._json(out)

    def _create_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        """``create_branch`` (body ``{startingPoint}`` optional)."""
        self._check_writable()
        payload = json.loads(self._read_body() or b"{}")
        state = self.hub.state
        state.create_branch(state.get_repo(repo_type, repo_id), branch, payload.get("startingPoint"))
        self._json({})

    # -- uploads ---------------------------------------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        """``create_commit`` step 1: decide "lfs" vs "regular" per file; report the current remote oid (sha256
        for LFS files, git blob sha1 for regular ones: what the client compares to skip unchanged files)."""
        self._check_writable()
        payload = json.loads(self._read_body() or b"{}")
        state = self.hub.state
        with state.lock:
            commit = state.resolve(state.get_repo(repo_type, repo_id), revision)
            patterns = state.lfs_patterns(commit)
        files = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            sample = base64.b64decode(item.get("sample", ""))
            lfs = size >= LFS_SIZE_THRESHOLD or b"\0" in sample or _matches_gitattributes(path, patterns)
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else existing.git_oid
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._json({"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        """git-lfs batch API (basic transfer only). Objects already stored get no ``actions`` (client skips them)."""
        self._check_writable()
        payload = json.loads(self._read_body() or b"{}")
        state = self.hub.state
        state.get_repo(repo_type, repo_id)
        operation = payload.get("operation", "upload")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj.get("oid", "")), int(obj.get("size", 0))
            out: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if operation == "upload":
                if not state.has_blob(oid):
                    out["actions"] = {
                        "upload": {"href": f"{self.hub.endpoint}/lfs-upload/{oid}?size={size}", "header": {}},
                        "verify": {"href": f"{self.hub.endpoint}/{URL_PREFIX[repo_type]}{repo_id}.git/info/lfs/"
                                           "objects/verify", "header": {}},
                    }
            elif state.has_blob(oid):
                out["actions"] = {"download": {"href": f"{self.hub.cdn_endpoint}/cdn/{oid}", "header": {}}}
            else:
                out["error"] = {"code": 404, "message": "Object does not exist"}
            objects.append(out)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str) -> None:
        """LFS "basic" upload: the body must hash to the oid (and match ``?size=``)."""
        self._check_writable()
        body = self._read_body()
        digest = hashlib.sha256(body).hexdigest()
        if digest != oid:
            raise HubError(400, f"sha256 mismatch: expected {oid}, got {digest}")
        expected = self.query.get("size", [None])[0]
        if expected is not None and int(expected) != len(body):
            raise HubError(400, f"size mismatch: expected {expected}, got {len(body)}")
        self.hub.state.put_blob(body)
        self._send(200, headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str) -> None:
        """LFS verify action: the object must be stored with the announced size."""
        payload = json.loads(self._read_body() or b"{}")
        oid, size = payload.get("oid", ""), payload.get("size")
        state = self.hub.state
        if not state.has_blob(oid) or (size is not None and os.path.getsize(state.blob_path(oid)) != int(size)):
            raise HubError(404, f"LFS object {oid} not found")
        self._json({"success": True})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        """``create_commit`` step 3: NDJSON body, a ``header`` line then one line per operation."""
        self._check_writable()
        if self.query.get("create_pr", ["0"])[0] in ("1", "true"):
            raise HubError(400, "create_pr is not supported by the test Hub server")
        lines = [json.loads(line) for line in self._read_body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit payload must be the header")
        state = self.hub.state
        repo = state.get_repo(repo_type, repo_id)
        commit = state.commit(repo, revision, lines[0].get("value") or {}, lines[1:])
        self._json({
            "success": True, "commitOid": commit.oid,
            "commitUrl": f"{self.hub.endpoint}/{URL_PREFIX[repo_type]}{repo_id}/commit/{commit.oid}",
            "hookOutput": "", "pullRequestUrl": None,
        })

    # -- downloads -------------------------------------------------------------------------------------------------
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        """``/resolve/{rev}/{path}``: regular files are served here (ETag = git blob id); LFS files answer 302 to the
        CDN listener with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``. Always sends ``X-Repo-Commit``."""
        state = self.hub.state
        with state.lock:
            commit = state.resolve(state.get_repo(repo_type, repo_id), revision)
            f = commit.files.get(path)
        base = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if f is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        if f.lfs:
            headers = {
                **base, "ETag": f'"{f.git_oid}"', "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": f.size,
                "Location": f"{self.hub.cdn_endpoint}/cdn/{f.sha256}?repo={URL_PREFIX[repo_type]}{repo_id}",
            }
            return self._send(302, b"", headers)
        self._serve_blob(f.sha256, f.size, {**base, "ETag": f'"{f.git_oid}"',
                                            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'})

    def _cdn_blob(self, sha256: str) -> None:
        """The "CDN": content-addressed LFS blobs (no auth needed, Range supported)."""
        state = self.hub.state
        if not state.has_blob(sha256):
            raise HubError(404, "NoSuchKey")
        self._serve_blob(sha256, os.path.getsize(state.blob_path(sha256)), {"ETag": f'"{sha256}"'})

    def _serve_blob(self, sha256: str, size: int, headers: dict) -> None:
        rng = self.headers.get("Range")
        headers = {**headers, "Last-Modified": email.utils.formatdate(usegmt=True)}
        if rng and rng.startswith("bytes=") and "," not in rng:
            start_s, _, end_s = rng[len("bytes="):].partition("-")
            if start_s == "":  # suffix range: last N bytes
                start, end = max(0, size - int(end_s)), size - 1
            else:
                start, end = int(start_s), (int(end_s) if end_s else size - 1)
            if start >= size:
                return self._send(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
            end = min(end, size - 1)
            body = b"" if self.command == "HEAD" else self._read_range(sha256, start, end - start + 1)
            return self._send(206, body, {**headers, "Content-Range": f"bytes {start}-{end}/{size}"},
                              "application/octet-stream", content_length=end - start + 1)
        body = b"" if self.command == "HEAD" else self.hub.state.read_blob(sha256)
        self._send(200, body, headers, "application/octet-stream", content_length=size)

    def _read_range(self, sha256: str, start: int, length: int) -> bytes:
        with open(self.hub.state.blob_path(sha256), "rb") as fh:
            fh.seek(start)
            return fh.read(length)


def _take_revision(segs: list[str]) -> tuple[str, list[str]]:
    """Split ``[rev, *path]`` URL segments. The revision is URL-quoted (``refs%2Fpr%2F1``) except special refs that
    HfFileSystem sends unquoted (``refs/convert/parquet``, ``refs/pr/1``), which span three segments."""
    if len(segs) >= 3 and segs[0] == "refs" and segs[1] in ("convert", "pr", "heads", "tags"):
        return "/".join(unquote(s) for s in segs[:3]), segs[3:]
    return unquote(segs[0]), segs[1:]
