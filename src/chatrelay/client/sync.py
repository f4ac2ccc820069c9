"""`Client`: the API for scripts and threads, httpx underneath; the twin of `AsyncClient`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from chatrelay.client import calls
from chatrelay.client.calls import Call, ConversationPage, PostedMessage
from chatrelay.client.errors import ChatRelayAPIError
from chatrelay.client.events import Event
from chatrelay.client.follow import FollowLoop
from chatrelay.client.options import ClientOptions, ClientSettings

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """chatrelay's API over one pooled httpx connection set; use it as `with`.

    `base_url` defaults to `CHATRELAY_URL` (else http://127.0.0.1:8000), `api_key` to
    `CHATRELAY_API_KEY`. Calls answered `429` (or `503`, for reads) are retried
    `max_retries` times after `Retry-After`; `follow` reconnects by itself (see `follow`).
    The other settings (`timeout`, `follow_read_timeout`, `max_retries`, `max_retry_wait`,
    `max_reconnects`, `max_reconnect_delay`) and their defaults are `ClientSettings`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **settings: Unpack[ClientSettings],
    ) -> None:
        self.options = ClientOptions.resolve(base_url, api_key, **settings)
        self._http = httpx.Client(**self.options.http_arguments(), transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def create_conversation(
        self,
        title: str | None = None,
        *,
        system_prompt: str | None = None,
        model: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self._send(calls.create_conversation(title, system_prompt, model, metadata))

    def list_conversations(
        self, limit: int | None = None, cursor: str | None = None
    ) -> ConversationPage:
        return self._send(calls.list_conversations(limit, cursor))

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        return self._send(calls.get_conversation(conversation_id))

    def delete_conversation(self, conversation_id: str) -> None:
        self._send(calls.delete_conversation(conversation_id))

    def post_message(
        self,
        conversation_id: str,
        content: str,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        *,
        cancel_on_disconnect: bool | None = None,
    ) -> PostedMessage:
        call = calls.post_message(conversation_id, content, model, params, cancel_on_disconnect)
        return self._send(call)

    def get_message(self, message_id: str) -> dict[str, Any]:
        return self._send(calls.get_message(message_id))

    def cancel(self, message_id: str) -> dict[str, Any]:
        return self._send(calls.cancel(message_id))

    def follow(self, message_id: str, last_event_id: int | None = None) -> Iterator[Event]:
        """The message's events after `last_event_id` (all of them without one), to the end.

        A dropped connection, an early end, a `5xx` or a `429` reconnects with the last id
        seen, after the server's `retry:` (or `Retry-After`); each event comes once. The
        iteration ends after `done` or `error`, or at once on the `204` of a message already
        finished at `last_event_id`. Other errors raise at once; `StreamInterruptedError`
        after `max_reconnects` failed attempts in a row carries the id to resume from.
        """
        loop = FollowLoop(calls.events_path(message_id), last_event_id, self.options.reconnect)
        while not loop.finished:
            delay: float | None
            try:
                with self._http.stream(
                    "GET",
                    loop.path,
                    headers=loop.request_headers(),
                    timeout=self.options.follow_timeout,
                ) as response:
                    if response.status_code != 200:
                        body = response.read()
                        delay = loop.refused(response.status_code, response.headers, body)
                    else:
                        loop.opened(response.headers.get("content-type"))
                        for chunk in response.iter_bytes():
                            yield from loop.feed(chunk)
                            if loop.finished:
                                return
                        delay = loop.interrupted(None)
            except httpx.TransportError as exc:
                delay = loop.interrupted(exc)
            if delay:
                time.sleep(delay)

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except httpx.TransportError as exc:
                raise call.unreachable(self.options.base_url, exc) from exc
            try:
                return call.result(response.status_code, response.headers, response.content)
            except ChatRelayAPIError as error:
                if attempt >= self.options.max_retries:
                    raise
                time.sleep(calls.retry_delay(call, error, attempt, self.options.max_retry_wait))
                attempt += 1
