"""A loopback Hugging Face Hub for tests: the parts of the Hub's HTTP API the ``huggingface_hub`` client uses.

* ``GET /api/models/{repo}[/revision/{rev}]`` (model info; ``?blobs=true`` adds sizes, git blob ids and LFS sha256)
* ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``?recursive=true``: every file, with sizes and LFS objects)
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob id, or the sha256 for LFS
  files), ``X-Linked-Etag`` / ``X-Linked-Size`` and a redirect to ``/__lfs__/<sha256>`` for LFS files (as the Hub
  sends weights to its CDN), byte ranges (``Range: bytes=N-`` answers 206), ``X-Error-Code`` on errors
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``).

Repositories are folders of files served under a repository id and a commit (``main`` points at it). Every request
is counted (``requests``), and faults can be injected: damaged bytes, an HTTP status, a connection cut after N
bytes, a slow stream, a gated repository that wants a token. It also answers absolute-form requests
(``GET http://host/...``), i.e. it works as the HTTP proxy of an unresolvable endpoint.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".pth", ".jpg", ".png")  # as the repositories' .gitattributes
LFS_MIN = 10 * 1024**2  # git keeps larger files in LFS whatever their name


@dataclass
class Entry:
    data: bytes
    git_oid: str
    sha256: str | None  # LFS files only

    @property
    def etag(self) -> str:
        return self.sha256 or self.git_oid


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def entry(data: bytes, name: str = "") -> Entry:
    lfs = name.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN
    return Entry(data, git_blob_id(data), hashlib.sha256(data).hexdigest() if lfs else None)


@dataclass
class Repo:
    commit: str
    files: dict[str, Entry]
    gated_token: str | None = None  # requests without "Authorization: Bearer <token>" get 401 GatedRepo


@dataclass
class Faults:
    damage: dict[str, int] = field(default_factory=dict)  # path -> GETs left to serve with one byte flipped (-1: all)
    status: dict[str, tuple[int, int]] = field(default_factory=dict)  # path or "api" -> (HTTP status, times; -1 all)
    cut_after: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (bytes, times): close mid-body
    delay: float = 0.0  # seconds per 64 KiB sent (a slow link)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    proxied: bool
    authorization: str | None


class LoopbackHub:
    """``with LoopbackHub() as hub: hub.add_folder(repo, commit, folder); os.environ["HF_ENDPOINT"] = hub.url``."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.faults = Faults()
        self.requests: list[Request] = []
        self.bytes_sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- content -------------------------------------------------------------------------------------------------
    def add_folder(self, repo: str, commit: str, folder: str | Path, gated_token: str | None = None) -> Repo:
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): entry(p.read_bytes(), p.name)
                 for p in sorted(folder.rglob("*")) if p.is_file()}
        self.repos[repo] = Repo(commit, files, gated_token)
        return self.repos[repo]

    def add_files(self, repo: str, commit: str, files: dict[str, bytes]) -> Repo:
        self.repos[repo] = Repo(commit, {k: entry(v, k) for k, v in files.items()})
        return self.repos[repo]

    # --- server --------------------------------------------------------------------------------------------------
    def start(self) -> LoopbackHub:
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections too (a client's kept-alive connection would still be served)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if (method is None or r.method == method) and contains in r.path)

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def take_fault(self, table: dict, key: str):
        """The fault for ``key`` (path, "api" or "*") if one is left, counting it down."""
        with self._lock:
            for k in (key, "*"):
                if k in table:
                    value = table[k]
                    times = value[1] if isinstance(value, tuple) else value
                    if times == 0:
                        continue
                    if times > 0:
                        table[k] = (value[0], times - 1) if isinstance(value, tuple) else times - 1
                    return value[0] if isinstance(value, tuple) else True
        return None


class _Server(ThreadingHTTPServer):
    """Tracks its open connections so that stopping drops them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections: set = set()

    def process_request(self, request, client_address):
        self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _handler(hub: LoopbackHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

        def _serve(self, head: bool):
            proxied = self.path.startswith(("http://", "https://"))
            parts = urlsplit(self.path)
            path, query = unquote(parts.path), parse_qs(parts.query)
            hub.log(Request(self.command, path, self.headers.get("Range"), proxied, self.headers.get("Authorization")))
            if path.startswith("/api/models/"):
                return self._api(path[len("/api/models/"):], query, head)
            if path.startswith("/__lfs__/"):
                return self._lfs(path[len("/__lfs__/"):], head)
            if "/resolve/" in path:
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                return self._resolve(repo, rest, head)
            return self._error(404, "EntryNotFound", "not a hub route", head)

        # --- helpers -------------------------------------------------------------------------------------------
        def _error(self, status: int, code: str | None, message: str, head: bool):
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, data, head: bool):
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _repo(self, repo_id: str, revision: str, head: bool) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound", f"Repository Not Found for url: {self.path}", head)
                return None
            if repo.gated_token and self.headers.get("Authorization") != f"Bearer {repo.gated_token}":
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted", head)
                return None
            if revision not in (repo.commit, "main"):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                return None
            return repo

        # --- routes --------------------------------------------------------------------------------------------
        def _api(self, rest: str, query: dict, head: bool):
            status = hub.take_fault(hub.faults.status, "api")
            if status:
                return self._error(status, None, f"injected HTTP {status}", head)
            if "/tree/" in rest:
                repo_id, _, tail = rest.partition("/tree/")
                revision, _, sub = tail.partition("/")
                repo = self._repo(repo_id, revision, head)
                if repo is None:
                    return None
                return self._json(_tree(repo, sub, query.get("recursive", ["false"])[0].lower() == "true"), head)
            repo_id, _, revision = rest.partition("/revision/")
            repo = self._repo(repo_id, revision or "main", head)
            if repo is None:
                return None
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = [{"rfilename": name, **(_blob(e) if blobs else {})} for name, e in sorted(repo.files.items())]
            return self._json({"_id": repo_id, "id": repo_id, "modelId": repo_id, "sha": repo.commit,
                               "private": False, "gated": bool(repo.gated_token), "disabled": False, "tags": [],
                               "downloads": 0, "likes": 0, "lastModified": "2024-11-13T00:00:00.000Z",
                               "createdAt": "2024-11-13T00:00:00.000Z", "siblings": siblings}, head)

        def _resolve(self, repo_id: str, rest: str, head: bool):
            revision, _, name = rest.partition("/")
            repo = self._repo(repo_id, revision, head)
            if repo is None:
                return None
            status = hub.take_fault(hub.faults.status, name)
            if status:
                return self._error(status, None, f"injected HTTP {status}", head)
            found = repo.files.get(name)
            if found is None:
                return self._error(404, "EntryNotFound", f"{name} does not exist at {revision}", head)
            if found.sha256 is not None:  # LFS: the hub redirects to its CDN, announcing the linked file
                self.send_response(302)
                self.send_header("Location", f"{self._origin()}/__lfs__/{found.sha256}")
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("ETag", f'"{found.git_oid}"')
                self.send_header("X-Linked-Etag", f'"{found.sha256}"')
                self.send_header("X-Linked-Size", str(len(found.data)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return self._body(found, name, head, {"X-Repo-Commit": repo.commit})

        def _lfs(self, sha256: str, head: bool):
            for repo in hub.repos.values():
                for name, found in repo.files.items():
                    if found.sha256 == sha256:
                        return self._body(found, name, head, {})
            return self._error(404, None, "no such object", head)

        def _origin(self) -> str:
            """The "CDN": this server under its other name, so clients see another host, as with the real Hub."""
            port = self.server.server_address[1]
            host = (self.headers.get("Host") or "127.0.0.1").rsplit(":", 1)[0]
            return f"http://{'localhost' if host == '127.0.0.1' else '127.0.0.1'}:{port}"

        def _body(self, found: Entry, name: str, head: bool, extra: dict):
            data = found.data
            if not head and hub.take_fault(hub.faults.damage, name):
                data = data[:-1] + bytes([data[-1] ^ 0x01]) if data else data  # same length, one bit flipped
            start = 0
            spec = self.headers.get("Range")
            if spec and spec.startswith("bytes=") and not head:
                start = int(spec[len("bytes="):].split("-")[0] or 0)
            if start >= len(data) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(206 if start else 200)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("ETag", f'"{found.etag}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if head:
                return None
            cut = hub.take_fault(hub.faults.cut_after, name)
            body = data[start:] if cut is None else data[start:start + cut]
            for offset in range(0, len(body), 65536):
                chunk = body[offset:offset + 65536]
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return None
                with hub._lock:
                    hub.bytes_sent[name] = hub.bytes_sent.get(name, 0) + len(chunk)
                if hub.faults.delay:
                    time.sleep(hub.faults.delay)
            if cut is not None:
                self.close_connection = True
            return None

    return Handler


def _blob(found: Entry) -> dict:
    info = {"blobId": found.git_oid, "size": len(found.data)}
    if found.sha256:
        info["lfs"] = {"sha256": found.sha256, "size": len(found.data), "pointerSize": 134}
    return info


def _tree(repo: Repo, sub: str, recursive: bool) -> list[dict]:
    prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
    items, folders = [], set()
    for name, found in sorted(repo.files.items()):
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        if "/" in rest and not recursive:
            folders.add(prefix + rest.split("/")[0])
            continue
        if recursive:
            parts = rest.split("/")[:-1]
            folders.update(prefix + "/".join(parts[:i + 1]) for i in range(len(parts)))
        item = {"type": "file", "oid": found.git_oid, "size": len(found.data), "path": name}
        if found.sha256:
            item["lfs"] = {"oid": found.sha256, "size": len(found.data), "pointerSize": 134}
        items.append(item)
    listed = [{"type": "directory", "oid": git_blob_id(f.encode()), "size": 0, "path": f} for f in sorted(folders)]
    return listed + items
