"""A fake Telegram Bot API server on loopback, for the bot's tests and its load benchmark.

It speaks enough of the Bot API for python-telegram-bot's long polling, file downloads and
replies, records every request it receives, and can answer with flood control (429), a slow
or failed download, a revoked token, or the plain-text 404 of a server that is no Bot API, on
demand. Use it as ``async with FakeBotApi() as server: ...``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:FAKE-token-for-tests"
BOT_ID = 123456789
DOWNLOAD = "file_download"  # the method name recorded for a GET of a file
TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile refuses bigger files, as Telegram does

# Parameters that hold free text; every other form field is JSON-encoded by the client.
_TEXT_FIELDS = frozenset({"text", "caption", "action", "file_id", "parse_mode", "description"})


@dataclass
class ApiCall:
    """One request the server received: what was asked, when, and the HTTP status answered."""

    seq: int
    at: float  # time.monotonic() on arrival
    method: str
    params: dict[str, Any]
    status: int = 0


@dataclass(frozen=True)
class FakeUser:
    """A Telegram user talking to the bot in a private chat whose id is the user's id."""

    id: int
    first_name: str = "Ada"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "is_bot": False, "first_name": self.first_name}


@dataclass(frozen=True)
class FakeGroup:
    """A group chat; users' messages sent "in" it reach the bot as group messages."""

    id: int  # negative, as Telegram's group ids are
    title: str = "Friends"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": "group", "title": self.title}


@dataclass
class _StoredFile:
    data: bytes
    path: str
    faults: deque[tuple[str, float]] = field(default_factory=deque)  # ("delay", s) | ("status", n)


class FakeBotApi:
    """The Bot API's methods on 127.0.0.1 at a free port, with users' messages queued by tests."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.token_revoked = False
        self.plain_not_found = False
        self.calls: list[ApiCall] = []
        self._seq = itertools.count(1)
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._updates: list[dict[str, Any]] = []
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._method_faults: dict[str, deque[dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._handle_method)
        app.router.add_get("/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def close(self) -> None:
        # Long polls and slow downloads still waiting return at once, so shutdown is quick.
        self._closing = True
        self._touch()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotApi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    @property
    def bot_user(self) -> dict[str, Any]:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "CaptionBot",
            "username": "captionbot_test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    # -- what users send ----------------------------------------------------------------------

    def send_photo(
        self,
        user: FakeUser,
        image: bytes,
        *,
        caption: str | None = None,
        media_group_id: str | None = None,
        size: tuple[int, int] = (224, 224),
        group: FakeGroup | None = None,
    ) -> dict[str, Any]:
        """Queue a compressed photo from ``user``: a thumbnail and the full size, as Telegram."""
        thumb = self.add_file(image, "photos")
        full = self.add_file(image, "photos")
        width, height = size
        content: dict[str, Any] = {
            "photo": [
                {**thumb, "width": 90, "height": 90 * height // width},
                {**full, "width": width, "height": height},
            ]
        }
        if caption is not None:
            content["caption"] = caption
            content["caption_entities"] = _command_entities(caption)
        if media_group_id is not None:
            content["media_group_id"] = media_group_id
        return self._push_message(user, content, group)

    def send_document(
        self,
        user: FakeUser,
        data: bytes,
        *,
        mime_type: str | None,
        file_name: str | None,
        file_size: int | None = None,
        caption: str | None = None,
        group: FakeGroup | None = None,
    ) -> dict[str, Any]:
        """Queue a file from ``user``; ``file_size`` may claim more than ``data`` holds.

        A ``mime_type`` or ``file_name`` of None is left out, as Telegram does when a client
        sent none.
        """
        document = self.add_file(data, "documents")
        if file_name is not None:
            document["file_name"] = file_name
        if mime_type is not None:
            document["mime_type"] = mime_type
        if file_size is not None:
            document["file_size"] = file_size
        content: dict[str, Any] = {"document": document}
        if caption is not None:
            content["caption"] = caption
        return self._push_message(user, content, group)

    def send_sticker(self, user: FakeUser, *, group: FakeGroup | None = None) -> dict[str, Any]:
        """Queue a (static) sticker from ``user``."""
        sticker = {
            **self.add_file(b"RIFF....WEBP", "stickers"),
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "type": "regular",
        }
        return self._push_message(user, {"sticker": sticker}, group)

    def send_text(
        self,
        user: FakeUser,
        text: str,
        *,
        reply_to: dict[str, Any] | None = None,
        group: FakeGroup | None = None,
    ) -> dict[str, Any]:
        """Queue a text message (a command when it starts with '/'), maybe as a reply."""
        content: dict[str, Any] = {"text": text}
        entities = _command_entities(text)
        if entities:
            content["entities"] = entities
        if reply_to is not None:
            content["reply_to_message"] = reply_to
        return self._push_message(user, content, group)

    def add_file(self, data: bytes, folder: str) -> dict[str, Any]:
        """Store bytes as a Telegram file; returns its id fields for a PhotoSize or Document."""
        n = next(self._file_ids)
        stored = _StoredFile(data=data, path=f"{folder}/file_{n}.jpg")
        file_id = f"FILE{n:06d}"
        self._files[file_id] = stored
        self._files_by_path[stored.path] = stored
        return {"file_id": file_id, "file_unique_id": f"U{n:06d}", "file_size": len(data)}

    # -- faults -------------------------------------------------------------------------------

    def revoke_token(self) -> None:
        """Answer every later call with 401, as Telegram does once @BotFather revokes a token."""
        self.token_revoked = True

    def answer_as_a_web_server(self) -> None:
        """Answer every later method call with 404 and a plain-text page, as a web server does."""
        self.plain_not_found = True

    def fail_next(
        self,
        method: str,
        *,
        error_code: int = 429,
        retry_after: int | None = 1,
        description: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error (default: flood control)."""
        if description is None and error_code == 429:
            description = f"Too Many Requests: retry after {retry_after}"
        description = description or f"Error {error_code}"
        error: dict[str, Any] = {"ok": False, "error_code": error_code, "description": description}
        if retry_after is not None:
            error["parameters"] = {"retry_after": retry_after}
        self._method_faults.setdefault(method.lower(), deque()).extend([error] * times)

    def delay_download(self, file_id: str, seconds: float, times: int = 1) -> None:
        """Make the next ``times`` downloads of a file wait ``seconds`` before answering."""
        self._files[file_id].faults.extend([("delay", seconds)] * times)

    def fail_download(self, file_id: str, status: int = 502, times: int = 1) -> None:
        """Answer the next ``times`` downloads of a file with an HTTP error status."""
        self._files[file_id].faults.extend([("status", float(status))] * times)

    # -- what the bot did ----------------------------------------------------------------------

    def calls_to(self, method: str) -> list[ApiCall]:
        """Calls of one method (case-insensitive), in arrival order."""
        return [call for call in self.calls if call.method.lower() == method.lower()]

    def replies_to(self, message: dict[str, Any]) -> list[ApiCall]:
        """Successful sendMessage calls that reply to ``message`` in its chat."""
        chat_id = message["chat"]["id"]
        return [
            call
            for call in self.calls_to("sendMessage")
            if call.status == 200
            and call.params.get("chat_id") == chat_id
            and _reply_target(call.params) == message["message_id"]
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until ``predicate()`` holds; it is checked after every request and update."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_for_replies(
        self, messages: list[dict[str, Any]], timeout: float = 30.0
    ) -> list[ApiCall]:
        """Wait for a reply to each message; returns the first reply to each, in order."""
        await self.wait_for(lambda: all(self.replies_to(m) for m in messages), timeout)
        return [self.replies_to(m)[0] for m in messages]

    # -- the HTTP side -------------------------------------------------------------------------

    def _touch(self) -> None:
        # Wake every waiter; each rechecks its own condition.
        self._changed.set()
        self._changed = asyncio.Event()

    def _record(self, method: str, params: dict[str, Any]) -> ApiCall:
        call = ApiCall(seq=next(self._seq), at=time.monotonic(), method=method, params=params)
        self.calls.append(call)
        self._touch()
        return call

    def _push_message(
        self, user: FakeUser, content: dict[str, Any], group: FakeGroup | None = None
    ) -> dict[str, Any]:
        private = {"id": user.id, "type": "private", "first_name": user.first_name}
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": group.as_json() if group is not None else private,
            "from": user.as_json(),
            **content,
        }
        self._messages[(message["chat"]["id"], message["message_id"])] = message
        self._updates.append({"update_id": next(self._update_ids), "message": message})
        self._touch()
        return message

    async def _handle_method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await _read_params(request)
        except ConnectionResetError:  # the client gave up while sending, e.g. when stopping
            return web.Response(status=400)
        call = self._record(method, params)
        if self.plain_not_found:
            call.status = 404
            self._touch()
            return web.Response(status=404, text="404 page not found\n")
        if request.match_info["token"] != self.token or self.token_revoked:
            status, body = 401, _error(401, "Unauthorized")
        elif self._method_faults.get(method.lower()):
            error = self._method_faults[method.lower()].popleft()
            status, body = error["error_code"], error
        else:
            status, body = await self._answer(method.lower(), params)
        call.status = status
        self._touch()
        return web.json_response(body, status=status)

    async def _answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "getme":
            return _ok(self.bot_user)
        if method == "getupdates":
            return _ok(await self._get_updates(params))
        if method in {"deletewebhook", "setmycommands", "sendchataction", "close", "logout"}:
            return _ok(True)
        if method == "getmycommands":
            return _ok([])
        if method == "getfile":
            return self._get_file(params)
        if method == "sendmessage":
            return self._send_message(params)
        return 404, _error(404, "Not Found")

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = params.get("offset")
        if offset is not None:
            # A client confirms updates below its offset; they are never sent again.
            self._updates = [u for u in self._updates if u["update_id"] >= int(offset)]
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        try:
            await self.wait_for(lambda: bool(self._updates) or self._closing, timeout)
        except TimeoutError:
            pass
        return self._updates[:limit]

    def _get_file(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file_id = str(params.get("file_id"))
        stored = self._files.get(file_id)
        if stored is None:
            return 400, _error(400, "Bad Request: invalid file_id")
        if len(stored.data) > TELEGRAM_DOWNLOAD_LIMIT:
            return 400, _error(400, "Bad Request: file is too big")
        return _ok(
            {
                "file_id": file_id,
                "file_unique_id": "U" + file_id,
                "file_size": len(stored.data),
                "file_path": stored.path,
            }
        )

    def _send_message(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        text = params.get("text")
        if not text:
            return 400, _error(400, "Bad Request: message text is empty")
        if len(str(text)) > 4096:
            return 400, _error(400, "Bad Request: message is too long")
        chat_id = params.get("chat_id")
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": self.bot_user,
            "text": str(text),
        }
        target = _reply_target(params)
        if target is not None:
            original = self._messages.get((chat_id, target))
            allowed = (params.get("reply_parameters") or {}).get("allow_sending_without_reply")
            if original is None and not allowed:
                return 400, _error(400, "Bad Request: message to be replied not found")
            if original is not None:
                message["reply_to_message"] = original
        self._messages[(chat_id, message["message_id"])] = message
        return _ok(message)

    async def _handle_download(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        call = self._record(DOWNLOAD, {"file_path": path})
        stored = self._files_by_path.get(path)
        if request.match_info["token"] != self.token or stored is None:
            status, body = 404, b"Not Found"
        elif stored.faults:
            kind, value = stored.faults.popleft()
            if kind == "delay":
                try:
                    await self.wait_for(lambda: self._closing, value)
                except TimeoutError:
                    pass
                status, body = 200, stored.data
            else:
                status, body = int(value), b"Bad Gateway"
        else:
            status, body = 200, stored.data
        call.status = status
        self._touch()
        return web.Response(body=body, status=status, content_type="application/octet-stream")


async def _read_params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        return dict(await request.json())
    form = await request.post()
    params: dict[str, Any] = {}
    for key, value in form.items():
        if not isinstance(value, str):  # an uploaded file
            params[key] = value.filename
        elif key in _TEXT_FIELDS:
            params[key] = value
        else:
            try:
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                params[key] = value
    return params


def _reply_target(params: dict[str, Any]) -> int | None:
    reply = params.get("reply_parameters")
    if isinstance(reply, dict):
        return reply.get("message_id")
    return params.get("reply_to_message_id")


def _command_entities(text: str) -> list[dict[str, Any]]:
    if not text.startswith("/"):
        return []
    return [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]


def _ok(result: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"ok": True, "result": result}


def _error(code: int, description: str) -> dict[str, Any]:
    return {"ok": False, "error_code": code, "description": description}
