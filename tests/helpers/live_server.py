"""What the RunyardLogger tests (tests/trainer_core/test_runyard_logger*.py) put between a real
Runyard server process (the fixtures of tests/trainer_core/conftest.py) and a logger or a script:
:class:`Proxy` and :func:`script_env`."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def script_env(**extra: str) -> dict[str, str]:
    """This process's environment without its RUNYARD_* variables, for a script that imports the
    project (``PYTHONPATH``), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


class Proxy:
    """127.0.0.1 proxy to the server, one request per connection (urllib sends ``Connection: close``)."""

    def __init__(self, target_url: str) -> None:
        self.target = ("127.0.0.1", urllib.parse.urlsplit(target_url).port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.mode = "forward"
        self.rules: list[list] = []
        self.dropped: Counter[str] = Counter()
        self.requests: list[tuple[float, str, str]] = []
        self._held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_answer(self, method: str, pattern: str, times: int = 1) -> None:
        self.rules.append([method, re.compile(pattern), times])

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode != "hang":
            held, self._held = self._held, []
            for conn in held:
                conn.close()

    def paths(self, method: str, pattern: str) -> list[tuple[float, str, str]]:
        rx = re.compile(pattern)
        return [r for r in list(self.requests) if r[1] == method and rx.search(r[2])]

    def close(self) -> None:
        self._closed = True
        self.set_mode("forward")
        self.sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.mode == "hang":
            self._held.append(conn)
            return
        try:
            conn.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            method, target = head.split(b"\r\n", 1)[0].decode().split(" ")[:2]
            path = urllib.parse.urlsplit(target).path
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            while len(body) < length:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                body += chunk
            self.requests.append((time.time(), method, path))
            drop = None
            for rule in self.rules:
                if rule[0] == method and rule[1].search(path) and rule[2] > 0:
                    rule[2] -= 1
                    drop = rule[1].pattern
                    break
            with socket.create_connection(self.target, timeout=30) as upstream:
                upstream.sendall(head + b"\r\n\r\n" + body)
                answer = b""
                while chunk := upstream.recv(1 << 20):
                    answer += chunk
            if drop is not None:
                self.dropped[drop] += 1  # stored by the server; the client never hears of it
                return
            conn.sendall(answer)
        except OSError:
            pass
        finally:
            if self.mode != "hang" or conn not in self._held:
                conn.close()
