"""httpx's API over aiohttp's connection pool and C HTTP parser, for upstreams behind a proxy.

httpcore parses HTTP/1.1 in pure Python (h11): profiled under load it was a third of the
relay's CPU, more than everything chatrelay itself does per event. `httpx-aiohttp` (the
transport the OpenAI Python SDK offers for high concurrency) keeps httpx as the API and
lets aiohttp read the bytes. An upstream reached directly goes through `http11` instead
(lighter still); aiohttp stays for proxies, which it speaks to (absolute-form requests,
`CONNECT` tunnels, proxy credentials). Two things are ours on top of it:

- failures keep the httpx exception classes httpcore would have raised for the same
  event (a connection refused is `ConnectError`, a body cut short is `RemoteProtocolError`
  or `ReadError`, …), so `http_errors` maps them to the same codes as before; the library's
  own mapping is coarser (it calls every lost connection a connect timeout);
- the `trace` request extension: httpcore reports when the request headers go out, which
  is where the connect limit ends and the first-byte limit begins. aiohttp has the same
  moment as a `TraceConfig` signal; a context variable carries the request's callback to it.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from chatrelay.upstream.body import BODY_EXTENSION, Trace
from chatrelay.upstream.failures import UpstreamProxyRefused, UpstreamTLSError, tls_failure

_TRACE: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "chatrelay_upstream_trace", default=None
)


def _proxy_refusal(exc: aiohttp.ClientHttpProxyError, setting: str | None) -> UpstreamProxyRefused:
    where = setting or "the proxy settings"
    if exc.status == 407:
        hint = f"check the user:password in {where}"
    else:
        hint = f"check {where}, or whether the proxy lets chatrelay reach the upstream"
    reason = f" {exc.message}" if exc.message else ""
    return UpstreamProxyRefused(f"the proxy answered HTTP {exc.status}{reason} to CONNECT; {hint}")


def _tls_failure(exc: aiohttp.ClientSSLError) -> UpstreamTLSError:
    cause: BaseException | None = getattr(exc, "certificate_error", None) or exc.__cause__
    if not isinstance(cause, ssl.SSLError):
        cause = getattr(exc, "os_error", None)
    return tls_failure(cause if cause is not None else exc)


# aiohttp's failures as the httpx exception httpcore raises for the same event; the first
# matching row wins, so subclasses come first.
_FAILURES: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS verification
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body ended before its end
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # bytes that are not HTTP
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientOSError, httpx.ReadError),  # reset by peer, broken pipe
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientError, httpx.TransportError),
)


def _as_httpx(exc: BaseException, proxy_setting: str | None = None) -> httpx.TransportError | None:
    """The httpx error for an aiohttp failure (possibly already wrapped by the library);
    `proxy_setting` is the variable that named the proxy, for the proxy's failures."""
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) else exc
    if isinstance(cause, aiohttp.ClientSSLError):
        return _tls_failure(cause)
    if isinstance(cause, aiohttp.ClientHttpProxyError):
        return _proxy_refusal(cause, proxy_setting)
    if isinstance(cause, aiohttp.ClientProxyConnectionError):
        where = f"; check {proxy_setting}" if proxy_setting else ""
        return httpx.ProxyError(f"could not connect to the proxy ({cause.os_error}){where}")
    for aiohttp_type, httpx_type in _FAILURES:
        if isinstance(cause, aiohttp_type):
            return httpx_type(f"{type(cause).__name__}: {cause}")
    return None


async def _headers_sent(
    _session: aiohttp.ClientSession, _ctx: SimpleNamespace, _params: object
) -> None:
    trace = _TRACE.get()
    if trace is not None:
        await trace("http11.send_request_headers.started", {})


class _Body(httpx.AsyncByteStream):
    """The response body, with aiohttp's failures mid-stream mapped like the request's.

    It reads aiohttp's `StreamReader` itself when it can reach it: under httpx-aiohttp's
    stream (an async generator around `iter_chunked`, in a context manager of its own)
    every chunk climbed two more frames, and a paced stream is one chunk per token.
    Failures are mapped here either way, from aiohttp's own exceptions.
    """

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner
        # httpx-aiohttp keeps the aiohttp response on its stream (checked against 0.2);
        # without it (another version) the bytes come through its stream as before.
        aiohttp_response = getattr(inner, "_aiohttp_response", None)
        self._content: aiohttp.StreamReader | None = None
        if isinstance(aiohttp_response, aiohttp.ClientResponse):
            self._content = aiohttp_response.content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            content = self._content
            if content is None:
                async for chunk in self._inner:
                    yield chunk
                return
            while chunk := await content.readany():
                yield chunk
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            mapped = _as_httpx(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        with contextlib.suppress(httpx.HTTPError, aiohttp.ClientError):
            await self._inner.aclose()  # a connection that already broke has nothing to close


class UpstreamTransport(AiohttpTransport):
    """One aiohttp session (no limit on connections) behind httpx's transport interface.

    `proxy` (`http://[user:pass@]host:port`) is decided once from the environment by the
    configuration, and `proxy_setting` names the variable it came from; the session itself
    never reads the environment.
    """

    def __init__(
        self,
        tls: ssl.SSLContext,
        *,
        keepalive_expiry: float = 60.0,
        proxy: str | None = None,
        proxy_setting: str | None = None,
    ) -> None:
        self._proxy_setting = proxy_setting
        tracing = aiohttp.TraceConfig()
        tracing.on_request_headers_sent.append(_headers_sent)

        def session() -> aiohttp.ClientSession:
            # Made on first use: a session belongs to the running event loop.
            connector = aiohttp.TCPConnector(limit=0, ssl=tls, keepalive_timeout=keepalive_expiry)
            return aiohttp.ClientSession(
                connector=connector, trace_configs=[tracing], auto_decompress=False
            )

        super().__init__(
            verify=tls,
            trust_env=False,
            client=session,
            proxy=httpx.Proxy(proxy) if proxy else None,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        token = _TRACE.set(request.extensions.get("trace"))
        try:
            response = await super().handle_async_request(request)
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            mapped = _as_httpx(exc, self._proxy_setting)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            _TRACE.reset(token)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        body = _Body(response.stream)
        response.stream = body
        response.extensions[BODY_EXTENSION] = body
        return response
