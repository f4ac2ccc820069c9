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
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]

_TRACE: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "chatrelay_upstream_trace", default=None
)


class UpstreamTLSError(httpx.ConnectError):
    """The upstream's certificate was refused, or TLS failed before any HTTP was spoken.

    httpcore reports these as a plain `ConnectError`; they get a class of their own because
    they fail the same way every time (no retry) and the operator needs to know which way.
    """


class UpstreamProxyRefused(httpx.ProxyError):
    """The proxy answered `CONNECT` with something other than 200 (407: it wants other
    credentials; 403: it does not allow that host). Asking again gets the same answer."""


def _proxy_refusal(exc: aiohttp.ClientHttpProxyError, setting: str | None) -> UpstreamProxyRefused:
    where = setting or "the proxy settings"
    if exc.status == 407:
        hint = f"check the user:password in {where}"
    else:
        hint = f"check {where}, or whether the proxy lets chatrelay reach the upstream"
    reason = f" {exc.message}" if exc.message else ""
    return UpstreamProxyRefused(f"the proxy answered HTTP {exc.status}{reason} to CONNECT; {hint}")


# What an OpenSSL verification code means to an operator (`X509_V_ERR_*`).
_VERIFY_REASONS = {
    2: "unknown issuer: the certificate's CA is not trusted",
    9: "the certificate is not yet valid",
    10: "the certificate has expired",
    18: "the certificate is self-signed and not trusted",
    19: "a self-signed certificate in the chain is not trusted",
    20: "unknown issuer: the certificate's CA is not trusted",
    21: "unknown issuer: the certificate's CA is not trusted",
    62: "wrong host: the certificate is not valid for this host name",
    64: "wrong host: the certificate is not valid for this IP address",
}
_TRUST_HINT = " (trust a private CA with CHATRELAY_UPSTREAM_CA_FILE or SSL_CERT_FILE)"


def tls_failure(cause: BaseException | None) -> UpstreamTLSError:
    """The error for a failed TLS handshake, naming the reason an operator can act on."""
    if isinstance(cause, ssl.SSLCertVerificationError):
        code = cause.verify_code
        reason = _VERIFY_REASONS.get(code, "the certificate was refused")
        if code in (2, 18, 19, 20, 21):
            reason += _TRUST_HINT
        detail = cause.verify_message or str(cause)
        return UpstreamTLSError(f"{reason} ({detail})")
    return UpstreamTLSError(f"the TLS handshake failed ({cause})")


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


# The response extension that holds a transport's own body stream (`_Body` here,
# `http11._Body`), which `body_chunks` reads directly.
BODY_EXTENSION = "chatrelay.body"
_NOT_ENCODED = ("", "identity")


def body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The response body's bytes as they arrive.

    When the body has no content coding to undo (an event stream, nearly always), they
    come from the transport's own stream, not through httpx's `aiter_bytes` — two more
    async generators (`aiter_raw`, the client's bound stream) and two re-chunkers per
    chunk, for bytes they pass on unchanged. A response from another transport, or a
    compressed one, goes through `aiter_bytes`. Either way `response.aclose()` closes it.
    """
    body = response.extensions.get(BODY_EXTENSION)
    coding = response.headers.get("content-encoding", "").strip().lower()
    if isinstance(body, httpx.AsyncByteStream) and coding in _NOT_ENCODED:
        return body.__aiter__()
    return response.aiter_bytes()


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
