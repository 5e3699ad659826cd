"""A small base for stateful platform fakes served over real HTTP(S) on loopback.

A fake subclasses ``FakeServer``, registers routes with ``@route(METHOD, regex)`` and keeps its
platform's state in plain attributes. Every request is recorded (``requests``), and faults can
be injected for the next N requests or at a rate: an HTTP status with body and headers, latency,
or a dropped connection, before the request is applied, or after it (``Fault.after``: applied,
then the answer is lost). ``trap`` runs a callback (e.g. kill -9 of the client) on the Nth
matching request, before or after applying it, and never answers. Each recorded request keeps
the status and body of the answer the fake sent (``status`` None: no answer). The real SDK is
pointed at ``server.url``; nothing is patched.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    match: re.Match | None = None
    status: int | None = None  # of the answer sent (None: none, e.g. dropped or trapped)
    answer: Any = None  # the body of that answer

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[0]

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-able, or bytes/str sent as is
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """One injected outcome. ``drop`` closes the connection without an answer."""

    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    path: str | None = None  # only requests whose path matches this regex
    #: apply the request first, then answer with this fault (or drop): the answer is lost
    after: bool = False
    method: str | None = None  # only requests of this method
    skip: int = 0  # let this many matching requests through first


@dataclass
class Trap:
    """On the ``nth`` request matching ``path`` (and ``method``): ``action()`` runs before the
    request is applied ("before": never applied) or after ("after"), and no answer is sent;
    or ("call") it runs first and the request then goes on as usual (e.g. a token expires)."""

    path: str
    nth: int
    when: str
    action: Callable[[], None]
    method: str | None = None
    seen: int = 0


def route(method: str, pattern: str) -> Callable:
    def mark(fn: Callable) -> Callable:
        fn._route = (method.upper(), re.compile(f"^{pattern}$"))  # type: ignore[attr-defined]
        return fn
    return mark


class FakeServer:
    """Base class: subclass, add ``@route`` methods taking a Request and returning Response."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, seed: int = 0):
        self.tls = tls
        self.requests: list[Request] = []
        self.scripted: list[Fault] = []  # consumed one per matching request, first
        self.fault_rate = 0.0
        self.fault_template: Fault | None = None
        self.latency = 0.0
        self.in_flight = self.max_in_flight = 0  # requests being served at once (the most)
        self.traps: list[Trap] = []
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self._routes = [getattr(self, n)._route + (getattr(self, n),) for n in dir(self)
                        if callable(getattr(self, n, None)) and hasattr(getattr(self, n), "_route")]
        self._httpd: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._httpd, "start() the fake first"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without TCP_NODELAY the client's delayed
            # ACK holds each answer ~40 ms, which caps a sequential client at ~20 requests/s
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (kill -9 tests) is not the fake's error

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------ faults
    def fail_next(self, n: int = 1, **fault: Any) -> None:
        """The next ``n`` requests (matching ``path`` if given) get this fault."""
        with self.lock:
            self.scripted.extend(Fault(**fault) for _ in range(n))

    def trap(self, path: str, nth: int, when: str, action: Callable[[], None],
             method: str | None = None) -> None:
        """See ``Trap``: e.g. kill the client on the 3rd write, after applying it."""
        assert when in ("before", "after", "call")
        with self.lock:
            self.traps.append(Trap(path, nth, when, action, method))

    def fail_rate(self, rate: float, **fault: Any) -> None:
        """Each request fails with probability ``rate`` (seeded, reproducible)."""
        self.fault_rate, self.fault_template = rate, Fault(**fault)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """Recorded requests, filtered by method and path regex."""
        return [r for r in self.requests if (method is None or r.method == method)
                and (path is None or re.search(path, r.path))]

    def _pick_trap(self, req: Request) -> Trap | None:
        with self.lock:
            for t in self.traps:
                if re.search(t.path, req.path) and t.method in (None, req.method):
                    t.seen += 1
                    if t.seen == t.nth:
                        self.traps.remove(t)
                        return t
        return None

    def _pick_fault(self, req: Request) -> Fault | None:
        with self.lock:
            for i, f in enumerate(self.scripted):
                if (f.path is None or re.search(f.path, req.path)) and \
                        f.method in (None, req.method):
                    if f.skip:
                        f.skip -= 1
                        return None
                    return self.scripted.pop(i)
            if self.fault_template and self.rng.random() < self.fault_rate:
                return self.fault_template
        return None

    # ------------------------------------------------------------ dispatch
    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Request(h.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                      {k.lower(): v for k, v in h.headers.items()}, body)
        with self.lock:
            self.requests.append(req)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._answer(h, req)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, h: BaseHTTPRequestHandler, req: Request) -> None:
        if self.latency:
            time.sleep(self.latency)
        trap = self._pick_trap(req)
        if trap is not None and trap.when in ("before", "call"):
            trap.action()
            if trap.when == "call":
                trap = None
            else:
                return self._drop(h)
        fault = self._pick_fault(req)
        if fault is not None and not fault.after:
            return self._fault(h, req, fault)
        resp = self._apply(req)
        if trap is not None:
            trap.action()
            return self._drop(h)
        if fault is not None:
            return self._fault(h, req, fault)
        self._send(h, resp, req)

    def _apply(self, req: Request) -> Response:
        for method, pattern, fn in self._routes:
            m = pattern.match(req.path)
            if m and method == req.method:
                req.match = m
                try:
                    return fn(req)
                except Exception as exc:  # a bug in the fake: make it loud
                    return Response(599, {"fake_error": repr(exc)})
        return self.not_found(req)

    def _fault(self, h: BaseHTTPRequestHandler, req: Request, fault: Fault) -> None:
        if fault.delay:
            time.sleep(fault.delay)
        if fault.drop:
            return self._drop(h)
        self._send(h, Response(fault.status, fault.body, dict(fault.headers)), req)

    @staticmethod
    def _drop(h: BaseHTTPRequestHandler) -> None:
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True

    def not_found(self, req: Request) -> Response:
        return Response(404, {"error": f"fake has no route for {req.method} {req.path}"})

    def _send(self, h: BaseHTTPRequestHandler, resp: Response, req: Request | None = None
              ) -> None:
        if req is not None:
            req.status, req.answer = resp.status, resp.body
        if isinstance(resp.body, bytes | str):
            data = resp.body.encode() if isinstance(resp.body, str) else resp.body
            ctype = resp.headers.pop("Content-Type", "text/plain")
        else:
            data = json.dumps(resp.body).encode() if resp.body is not None else b""
            ctype = resp.headers.pop("Content-Type", "application/json")
        h.send_response(resp.status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in resp.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
