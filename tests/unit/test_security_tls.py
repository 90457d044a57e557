"""TLS settings reach the wire: Kafka clients verify the broker against the CA file and
present the client certificate; every Redis client speaks TLS and logs in as the ACL user
of a ``rediss://user:password@host:port/db`` URL, passed through unchanged."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streamtags.errors import SettingsError
from streamtags.live.kafka_client import client_options, faust_credentials
from streamtags.serving.lookup import AsyncTagClient, TagClient
from streamtags.serving.redis_sink import RedisSink, TriggerGuard
from streamtags.settings import KafkaSecurity, Secret

# A self-signed certificate for 127.0.0.1 and its key, made for these tests only (they
# guard nothing): it serves as CA, server and client certificate at once.
CERT = """-----BEGIN CERTIFICATE-----
MIIBrjCCAVOgAwIBAgIUQrUB1JOIzn6qZ3l+m0Qkl7KW7fowCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPc3RyZWFtdGFncy10ZXN0MCAXDTI2MTEyMzE0MTczM1oYDzIx
MjYxMDMwMTQxNzMzWjAaMRgwFgYDVQQDDA9zdHJlYW10YWdzLXRlc3QwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAARX7uIBj5HCjgFcdkBzbEdvmSP4pBnohgOAF3q4
at7wWuaxysxRNACyZc2T+n8zy4svn9qSYoHAoSKecIsI90oEo3UwczAdBgNVHQ4E
FgQUDcLGWaKDWHU/CbHPdAAPo664EfQwHwYDVR0jBBgwFoAUDcLGWaKDWHU/CbHP
dAAPo664EfQwDwYDVR0TAQH/BAUwAwEB/zAgBgNVHREEGTAXhwR/AAABgg9zdHJl
YW10YWdzLXRlc3QwCgYIKoZIzj0EAwIDSQAwRgIhAPmcMedSDE/mGT3Tc18i4yPp
B/TLUtHIQkRfgxU2gyDGAiEA5+8VQjrngrmVJSFHyAxT/GhVQOP+bbEkW3Z2wbDM
DQ0=
-----END CERTIFICATE-----
"""
KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxvnc0PqTKVY/g6dp
FHesECQWeLEqA08NMhG68vHrDf6hRANCAARX7uIBj5HCjgFcdkBzbEdvmSP4pBno
hgOAF3q4at7wWuaxysxRNACyZc2T+n8zy4svn9qSYoHAoSKecIsI90oE
-----END PRIVATE KEY-----
"""


@dataclass
class TlsFiles:
    cert: Path
    key: Path


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    (tmp_path / "cert.pem").write_text(CERT)
    (tmp_path / "key.pem").write_text(KEY)
    return TlsFiles(tmp_path / "cert.pem", tmp_path / "key.pem")


def server_context(tls: TlsFiles, *, client_certificates: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.cert))
    context.load_cert_chain(str(tls.cert), str(tls.key))
    context.verify_mode = ssl.CERT_REQUIRED if client_certificates else ssl.CERT_NONE
    return context


async def client_certificate_seen(client: ssl.SSLContext, tls: TlsFiles) -> str | None:
    """Connect to a local TLS server that demands a client certificate signed by the test
    CA; the common name of the certificate it accepted, or None if it refused."""
    seen: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = writer.get_extra_info("peercert")["subject"]
        seen.append(dict(pair[0] for pair in subject)["commonName"])
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(
        answer, "127.0.0.1", 0, ssl=server_context(tls, client_certificates=True)
    )
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1], ssl=client
        )
        # with TLS 1.3 a refused client certificate shows only here, as a closed stream
        reply = await reader.read()
        writer.close()
    except (ssl.SSLError, ConnectionError):
        return None
    finally:
        server.close()
    return seen[0] if reply == b"ok" else None


async def test_kafka_tls_verifies_the_broker_and_presents_the_client_certificate(
    tls: TlsFiles,
) -> None:
    with_cert = KafkaSecurity(
        security_protocol="SSL", ssl_cafile=tls.cert, ssl_certfile=tls.cert, ssl_keyfile=tls.key
    )
    context = client_options(with_cert)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert await client_certificate_seen(context, tls) == "streamtags-test"
    worker = credentials_to_aiokafka_auth(faust_credentials(with_cert))
    assert worker["security_protocol"] == "SSL"
    assert await client_certificate_seen(worker["ssl_context"], tls) == "streamtags-test"
    without_cert = KafkaSecurity(security_protocol="SSL", ssl_cafile=tls.cert)
    assert await client_certificate_seen(client_options(without_cert)["ssl_context"], tls) is None


async def test_kafka_tls_refuses_a_broker_the_ca_file_did_not_sign(tls: TlsFiles) -> None:
    """Without the test CA (the system's CAs only) the handshake fails."""
    context = client_options(KafkaSecurity(security_protocol="SSL"))["ssl_context"]
    assert await client_certificate_seen(context, tls) is None


def test_sasl_over_tls_gives_the_worker_a_login_and_a_tls_context(tls: TlsFiles) -> None:
    security = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="streamtags",
        sasl_password=Secret("kafka-pass-4711"),
        ssl_cafile=tls.cert,
    )
    for auth in (
        client_options(security),
        credentials_to_aiokafka_auth(faust_credentials(security)),
    ):
        assert auth["security_protocol"] == "SASL_SSL"
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert auth["sasl_plain_password"] == "kafka-pass-4711"
        assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_a_key_that_does_not_belong_to_the_certificate_stops_at_start_up(tls: TlsFiles) -> None:
    tls.key.write_text(KEY.replace("MIGHAgEAMBMG", "MIGHAgEAMBMH"))
    security = KafkaSecurity(security_protocol="SSL", ssl_certfile=tls.cert, ssl_keyfile=tls.key)
    with pytest.raises(SettingsError, match=r"STREAMTAGS_KAFKA_SSL_CERTFILE=.* are unusable"):
        client_options(security)


def test_a_ca_file_that_is_not_pem_stops_at_start_up(tls: TlsFiles) -> None:
    tls.cert.write_text("not a certificate\n")
    security = KafkaSecurity(security_protocol="SSL", ssl_cafile=tls.cert)
    with pytest.raises(SettingsError, match=r"STREAMTAGS_KAFKA_SSL_CAFILE=.* is unusable"):
        faust_credentials(security)


@dataclass
class TlsRedis:
    """A stand-in Redis behind TLS that records each command and answers just enough."""

    port: int = 0
    commands: list[list[bytes]] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while command := await _read_command(reader):
                self.commands.append(command)
                writer.write(_REPLIES.get(command[0].upper(), b"+OK\r\n"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # a client that gave up (the refused-certificate test)
        writer.close()


#: RESP3 (redis-py's default): HELLO says so; HGETALL: an empty map; SCRIPT EXISTS: the
#: script is loaded; everything else: OK.
_REPLIES = {
    b"HELLO": b"%1\r\n+proto\r\n:3\r\n",
    b"HGETALL": b"%0\r\n",
    b"SCRIPT": b"*1\r\n:1\r\n",
}


async def _read_command(reader: asyncio.StreamReader) -> list[bytes]:
    header = await reader.readline()
    if not header:
        return []
    command = []
    for _ in range(int(header[1:])):
        size = int((await reader.readline())[1:])
        command.append((await reader.readexactly(size + 2))[:-2])
    return command


#: What a lookup returns when it failed open (a real answer is a different list).
FAILED: list[dict[str, Any]] = [{"tag": "lookup failed"}]


@pytest.fixture
async def tls_redis(tls: TlsFiles) -> AsyncIterator[TlsRedis]:
    fake = TlsRedis()
    server = await asyncio.start_server(
        fake.serve, "127.0.0.1", 0, ssl=server_context(tls, client_certificates=False)
    )
    fake.port = server.sockets[0].getsockname()[1]
    yield fake
    server.close()
    await server.wait_closed()


async def test_every_redis_client_speaks_tls_and_logs_in_as_the_acl_user_of_the_url(
    tls: TlsFiles, tls_redis: TlsRedis
) -> None:
    url = f"rediss://tagger:redis-pass-0815@127.0.0.1:{tls_redis.port}/2?ssl_ca_certs={tls.cert}"
    login = [b"AUTH", b"tagger", b"redis-pass-0815"]

    with TagClient(redis_url=url, timeout_ms=2000) as client:
        assert await asyncio.to_thread(client.tags, "u1", default=FAILED) == []
    async with AsyncTagClient(redis_url=url, timeout_ms=2000) as lookup:
        assert await lookup.tags("u1", default=FAILED) == []
    sink = RedisSink(redis_url=url, prefix="p:", timeout_ms=2000)
    sink.add(
        [{"user_id": "u1", "tag": "vip", "action": "cleared", "ts": "2026-11-22T10:00:00.000Z"}]
    )
    assert await sink.flush()
    guard = TriggerGuard(redis_url=url, prefix="t:", timeout_ms=2000, ttl_s=60)
    assert await guard.claim(["trigger-1"]) == {"trigger-1"}
    await sink.close()
    await guard.close()

    names = [command[0].upper() for command in tls_redis.commands]
    logins = [command for command in tls_redis.commands if command[0] in (b"HELLO", b"AUTH")]
    assert len(logins) == 4  # one connection per client, each logged in (RESP3: HELLO 3 AUTH)
    assert all(command[-3:] == login for command in logins)
    assert names.count(b"SELECT") == 4
    assert {b"HGETALL", b"EVALSHA", b"SET"} <= set(names)


async def test_a_redis_client_refuses_a_tls_server_its_url_does_not_trust(
    tls_redis: TlsRedis,
) -> None:
    """Without ``ssl_ca_certs`` the system's CAs do not know the test certificate."""
    url = f"rediss://tagger:redis-pass-0815@127.0.0.1:{tls_redis.port}/2"
    async with AsyncTagClient(redis_url=url, timeout_ms=2000) as lookup:
        assert await lookup.tags("u1", default=FAILED) is FAILED
    assert tls_redis.commands == []
