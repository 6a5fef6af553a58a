"""HTTPS and client certificates for the QRS port (SPEC 9.4).

The platform's QRS is reached over HTTPS with a client certificate that its own CA issued;
the certificate proves the caller is a trusted service, and header `X-Qlik-User` names the
user it acts for. A client certificate is asked for, not required (`CERT_OPTIONAL`): callers
with bearer tokens connect without one. A certificate that is presented must verify against
`QRS_CLIENT_CA_FILE`, or the handshake fails.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from repository_service.settings import QrsSettings

SERVICE_ACCOUNT = ("INTERNAL", "sa_repository")
SERVICE_ACCOUNT_NAME = "INTERNAL\\sa_repository"


def server_ssl_context(settings: QrsSettings) -> ssl.SSLContext | None:
    """Return the TLS context to serve with, or None to serve plain HTTP."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.client_ca_file is not None:
        context.load_verify_locations(cafile=settings.client_ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def has_verified_client_certificate(request: web.Request) -> bool:
    """Tell whether the connection presented a client certificate that verified."""
    transport = request.transport
    if transport is None:
        return False
    # An empty dict when no certificate was presented or it was not verified (CERT_NONE).
    return bool(transport.get_extra_info("peercert"))


def parse_qlik_user(header: str) -> tuple[str, str] | None:
    """Read `UserDirectory=<dir>; UserId=<id>` (names in any case); None when malformed.

    A name given twice is malformed: which of two users the caller meant is not ours to guess,
    and a proxy that checks the first while this read the last would act for another user."""
    values: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            key = name.strip().lower()
            if key in values:
                return None
            values[key] = value.strip()
    directory, user_id = values.get("userdirectory", ""), values.get("userid", "")
    if not directory or not user_id:
        return None
    return directory, user_id
