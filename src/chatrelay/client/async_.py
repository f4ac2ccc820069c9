"""`AsyncClient`: the API for asyncio services, httpx underneath."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from chatrelay.client import calls
from chatrelay.client.calls import Call, ConversationPage, PostedMessage
from chatrelay.client.errors import ChatRelayAPIError
from chatrelay.client.events import Event
from chatrelay.client.follow import FollowLoop
from chatrelay.client.options import ClientOptions, ClientSettings

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """chatrelay's API over one pooled httpx connection set; use it as `async with`.

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
        transport: httpx.AsyncBaseTransport | None = None,
        **settings: Unpack[ClientSettings],
    ) -> None:
        self.options = ClientOptions.resolve(base_url, api_key, **settings)
        self._http = httpx.AsyncClient(**self.options.http_arguments(), transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create_conversation(
        self,
        title: str | None = None,
        *,
        system_prompt: str | None = None,
        model: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await self._send(calls.create_conversation(title, system_prompt, model, metadata))

    async def list_conversations(
        self, limit: int | None = None, cursor: str | None = None
    ) -> ConversationPage:
        return await self._send(calls.list_conversations(limit, cursor))

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        return await self._send(calls.get_conversation(conversation_id))

    async def delete_conversation(self, conversation_id: str) -> None:
        await self._send(calls.delete_conversation(conversation_id))

    async def post_message(
        self,
        conversation_id: str,
        content: str,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        *,
        cancel_on_disconnect: bool | None = None,
    ) -> PostedMessage:
        call = calls.post_message(conversation_id, content, model, params, cancel_on_disconnect)
        return await self._send(call)

    async def get_message(self, message_id: str) -> dict[str, Any]:
        return await self._send(calls.get_message(message_id))

    async def cancel(self, message_id: str) -> dict[str, Any]:
        return await self._send(calls.cancel(message_id))

    async def follow(
        self, message_id: str, last_event_id: int | None = None
    ) -> AsyncIterator[Event]:
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
                async with self._http.stream(
                    "GET",
                    loop.path,
                    headers=loop.request_headers(),
                    timeout=self.options.follow_timeout,
                ) as response:
                    if response.status_code != 200:
                        body = await response.aread()
                        delay = loop.refused(response.status_code, response.headers, body)
                    else:
                        loop.opened(response.headers.get("content-type"))
                        async for chunk in response.aiter_bytes():
                            for event in loop.feed(chunk):
                                yield event
                            if loop.finished:
                                return
                        delay = loop.interrupted(None)
            except httpx.TransportError as exc:
                delay = loop.interrupted(exc)
            if delay:
                await asyncio.sleep(delay)

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except httpx.TransportError as exc:
                raise call.unreachable(self.options.base_url, exc) from exc
            try:
                return call.result(response.status_code, response.headers, response.content)
            except ChatRelayAPIError as error:
                if attempt >= self.options.max_retries:
                    raise
                await asyncio.sleep(
                    calls.retry_delay(call, error, attempt, self.options.max_retry_wait)
                )
                attempt += 1
