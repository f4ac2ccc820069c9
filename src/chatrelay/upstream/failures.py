"""Transport failures of chatrelay's own beside httpx's, raised by either transport.

A refused certificate and a proxy's refusal fail the same way every time, so they are
never retried (`http_errors`), and each names what the operator can change.
"""

from __future__ import annotations

import ssl

import httpx


class UpstreamTLSError(httpx.ConnectError):
    """The upstream's certificate was refused, or TLS failed before any HTTP was spoken.

    httpcore reports these as a plain `ConnectError`; they get a class of their own because
    they fail the same way every time (no retry) and the operator needs to know which way.
    """


class UpstreamProxyRefused(httpx.ProxyError):
    """The proxy answered `CONNECT` with something other than 200 (407: it wants other
    credentials; 403: it does not allow that host). Asking again gets the same answer."""


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
