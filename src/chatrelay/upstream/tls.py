"""The certificates an HTTPS upstream is checked against.

The public bundle (certifi, as httpx uses) unless `SSL_CERT_FILE` / `SSL_CERT_DIR` replace
it — the convention OpenSSL, curl, requests and httpx share — plus a private CA from
`CHATRELAY_UPSTREAM_CA_FILE` (or a route's `ca_file`), added rather than replacing, so an
operator trusting an internal gateway does not lose the public upstreams.
"""

from __future__ import annotations

import ssl

import certifi

from chatrelay.config_upstreams import TrustSettings


def tls_context(trust: TrustSettings) -> ssl.SSLContext:
    if trust.cert_file or trust.cert_dir:
        context = ssl.create_default_context(cafile=trust.cert_file, capath=trust.cert_dir)
    else:
        context = ssl.create_default_context(cafile=certifi.where())
    if trust.ca_file:
        context.load_verify_locations(cafile=trust.ca_file)
    return context
