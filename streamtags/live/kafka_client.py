"""Kafka connection security in one place: the settings turned into client arguments.

Every Kafka client streamtags opens takes its security from here: aiokafka
clients (the admin that creates topics, ``produce``, ``simulate``,
``watch``, ``score``) through :func:`client_options`, the Faust worker
through :func:`faust_credentials` (Faust hands them to each aiokafka
consumer and producer it makes, in ``credentials_to_aiokafka_auth`` of
``faust/transport/drivers/aiokafka.py``). Before the first client starts,
:func:`check_reachable` connects, logs in and asks for metadata once, so a
wrong password or an unreachable broker stops the command with one line
that says why, instead of aiokafka's generic "Unable to bootstrap".

At debug level aiokafka logs every request and response it exchanges,
SASL ones included: with ``PLAIN`` that is the password itself, with SCRAM
the salt and proof an attacker could test guesses against. Whenever
credentials are handed out here, :class:`SaslExchangeRedactor` is put on
aiokafka's connection logger so those payloads never reach a log.

    options = client_options(settings.kafka_security)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **options)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import faust
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import IllegalSaslStateError, KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from faust.types.auth import CredentialsT

from streamtags.errors import KafkaUnavailable, SettingsError
from streamtags.settings import PREFIX, KafkaSecurity

__all__ = [
    "SaslExchangeRedactor",
    "check_reachable",
    "client_options",
    "faust_credentials",
    "ssl_context",
]

#: The logger aiokafka's connections write each request and response to.
_AIOKAFKA_CONNECTION_LOGGER = "aiokafka.conn"


class SaslExchangeRedactor(logging.Filter):
    """Replaces SASL authentication payloads in log records with ``<redacted>``.

    aiokafka logs ``SaslAuthenticateRequest_v1(sasl_auth_bytes=...)`` and the
    matching response as arguments of its debug records; every other record
    passes untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if isinstance(record.args, tuple) and any(_is_sasl_exchange(a) for a in record.args):
            record.args = tuple(
                f"{type(arg).__name__}(<redacted>)" if _is_sasl_exchange(arg) else arg
                for arg in record.args
            )
        return True


def _is_sasl_exchange(arg: object) -> bool:
    return type(arg).__name__.startswith("SaslAuthenticate")


def _redact_sasl_exchanges() -> None:
    """Put one :class:`SaslExchangeRedactor` on aiokafka's connection logger."""
    logger = logging.getLogger(_AIOKAFKA_CONNECTION_LOGGER)
    if not any(isinstance(existing, SaslExchangeRedactor) for existing in logger.filters):
        logger.addFilter(SaslExchangeRedactor())


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context for ``SSL``/``SASL_SSL`` (verifying the brokers), else None.

    Raises :class:`SettingsError` when the CA, certificate or key files cannot
    be loaded (not PEM, or a key that does not match its certificate).
    """
    if not security.uses_tls:
        return None
    cafile = security.ssl_cafile
    try:
        # create_default_context verifies the broker's certificate and host name.
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"{PREFIX}KAFKA_SSL_CAFILE={str(cafile)!r} is unusable: {exc}"
        ) from None
    if security.ssl_certfile is not None:
        keyfile = security.ssl_keyfile
        try:
            context.load_cert_chain(
                str(security.ssl_certfile), keyfile=str(keyfile) if keyfile else None
            )
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                f"{PREFIX}KAFKA_SSL_CERTFILE={str(security.ssl_certfile)!r} and "
                f"{PREFIX}KAFKA_SSL_KEYFILE={str(keyfile)!r} are unusable: {exc}"
            ) from None
    return context


def client_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (admin, producer, consumer)."""
    options: dict[str, Any] = {
        "security_protocol": security.security_protocol,
        "ssl_context": ssl_context(security),
    }
    if security.uses_sasl:
        _redact_sasl_exchanges()
        options |= {
            "sasl_mechanism": security.sasl_mechanism,
            "sasl_plain_username": security.sasl_username,
            "sasl_plain_password": security.sasl_password.reveal(),
        }
    return options


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for ``security``; None for ``PLAINTEXT``.

    Faust derives the protocol from the type: :class:`faust.SASLCredentials`
    is ``SASL_PLAINTEXT``, or ``SASL_SSL`` when given a TLS context, and
    passes any mechanism through (SCRAM included);
    :class:`faust.SSLCredentials` is ``SSL``.
    """
    context = ssl_context(security)
    if security.uses_sasl:
        _redact_sasl_exchanges()
        credentials: CredentialsT = faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password.reveal(),
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
        return credentials
    if context is not None:
        return faust.SSLCredentials(context)
    return None


async def check_reachable(
    *, bootstrap: str, security: KafkaSecurity, timeout_ms: int = 10_000
) -> None:
    """Connect, log in and fetch metadata from one bootstrap server, trying each in turn.

    Raises :class:`KafkaUnavailable` naming every server's reason (refused,
    TLS failure, wrong credentials, ...) when none of them answers within
    ``timeout_ms`` milliseconds each.
    """
    options = client_options(security)
    reasons: list[str] = []
    for host, port, _ in collect_hosts(bootstrap):
        try:
            await asyncio.wait_for(
                _ask_metadata(host, port, options, timeout_ms), timeout_ms / 1000
            )
            return
        except (OSError, KafkaError, TimeoutError) as exc:
            reasons.append(f"{host}:{port}: {_reason(exc, security, timeout_ms)}")
    raise KafkaUnavailable(
        f"cannot use Kafka at {bootstrap} ({security.describe()}): {'; '.join(reasons)}"
    )


async def _ask_metadata(host: str, port: int, options: dict[str, Any], timeout_ms: int) -> None:
    # aiokafka's own bootstrap step (AIOKafkaClient.bootstrap), minus its habit of logging
    # the reason and raising a reasonless "Unable to bootstrap"; public names of aiokafka
    # 0.14's conn and protocol modules.
    connection = await create_conn(host, port, request_timeout_ms=timeout_ms, **options)
    try:
        await connection.send(MetadataRequest([]))
    finally:
        connection.close()


def _reason(exc: BaseException, security: KafkaSecurity, timeout_ms: int) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_ms} ms"
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, IllegalSaslStateError):
        # what a SASL client gets from a listener that expects no login
        reason += f" (does this listener expect {security.security_protocol}?)"
    return reason
