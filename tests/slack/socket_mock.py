"""A local stand-in for Slack's Socket Mode WebSocket endpoint on 127.0.0.1 (plain ws://, RFC 6455
framing by hand: the stdlib has no WebSocket server). The mock Web API (slack_mock.py) hands its URL
out from apps.connections.open. `send_event(event)` pushes an events_api envelope to a connected
client; `acks` records the envelope ids the app acknowledged, with the time."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
import uuid

from tests.slack.slack_mock import APP_ID, BOT_USER, TEAM

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(opcode: int, data: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    if len(data) < 126:
        head += bytes([len(data)])
    elif len(data) < 1 << 16:
        head += bytes([126]) + struct.pack("!H", len(data))
    else:
        head += bytes([127]) + struct.pack("!Q", len(data))
    return head + data


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_frame(conn: socket.socket) -> tuple[int, bytes]:
    b1, b2 = _recv_exact(conn, 2)
    length = b2 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _recv_exact(conn, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _recv_exact(conn, 8))
    mask = _recv_exact(conn, 4) if b2 & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(_recv_exact(conn, length)))
    return b1 & 0x0F, data


class SocketModeMock:
    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.acks: dict[str, float] = {}
        self.connections: list[socket.socket] = []
        self._lock = threading.Condition()
        self._send_lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link/?ticket=test"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            headers = dict(line.split(": ", 1) for line in request.decode().split("\r\n")[1:] if ": " in line)
            key = next(v for k, v in headers.items() if k.lower() == "sec-websocket-key").strip()
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            with self._lock:
                self.connections.append(conn)
                self._lock.notify_all()
            self._send(conn, 1, json.dumps({"type": "hello", "num_connections": 1}).encode())
            while True:
                opcode, data = _read_frame(conn)
                if opcode == 8:  # close
                    self._send(conn, 8, data[:2])
                    return
                if opcode == 9:  # ping
                    self._send(conn, 10, data)
                elif opcode == 1:
                    message = json.loads(data)
                    if message.get("envelope_id"):
                        with self._lock:
                            self.acks[message["envelope_id"]] = time.monotonic()
                            self._lock.notify_all()
        except (ConnectionError, OSError, StopIteration, ValueError):
            return
        finally:
            with self._lock:
                if conn in self.connections:
                    self.connections.remove(conn)
            conn.close()

    def _send(self, conn: socket.socket, opcode: int, data: bytes) -> None:
        with self._send_lock:
            conn.sendall(_frame(opcode, data))

    def wait_connected(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self.connections:
                if not self._lock.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError("no Socket Mode connection")

    def send_event(self, event: dict, event_id: str | None = None) -> str | None:
        """Deliver an events_api envelope to the first connection; returns its envelope id (None: no connection)."""
        envelope_id = uuid.uuid4().hex
        payload = {"token": "legacy", "team_id": TEAM, "api_app_id": APP_ID, "type": "event_callback", "event": event,
                   "event_id": event_id or f"Ev{uuid.uuid4().hex[:12].upper()}", "event_time": int(time.time()),
                   "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}]}
        message = json.dumps({"envelope_id": envelope_id, "type": "events_api", "payload": payload,
                              "accepts_response_payload": False, "retry_attempt": 0, "retry_reason": ""})
        with self._lock:
            conns = list(self.connections)
        if not conns:
            return None
        try:
            self._send(conns[0], 1, message.encode())
        except OSError:
            return None
        return envelope_id

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for conn in self.connections:
                conn.close()
