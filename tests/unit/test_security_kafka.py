"""The Kafka login settings become the same aiokafka arguments for every client, the
Faust worker's included; the login never reaches a log; a broker out of reach is one
line that says why. (TLS: test_security_tls.py.)"""

from __future__ import annotations

import logging
import socket

import pytest
from aiokafka.protocol.admin import SaslAuthenticateRequest_v1
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streamtags.errors import KafkaUnavailable
from streamtags.live.kafka_client import check_reachable, client_options, faust_credentials
from streamtags.settings import KafkaSecurity, SaslMechanism, Secret

PASSWORD = "kafka-pass-4711"


def sasl(mechanism: SaslMechanism = "SCRAM-SHA-256") -> KafkaSecurity:
    return KafkaSecurity(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="streamtags",
        sasl_password=Secret(PASSWORD),
    )


def test_plaintext_clients_get_no_tls_and_no_login() -> None:
    assert client_options(KafkaSecurity()) == {
        "security_protocol": "PLAINTEXT",
        "ssl_context": None,
    }
    assert faust_credentials(KafkaSecurity()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_clients_log_in_with_the_mechanism_user_and_password(mechanism: SaslMechanism) -> None:
    assert client_options(sasl(mechanism=mechanism)) == {
        "security_protocol": "SASL_PLAINTEXT",
        "ssl_context": None,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "streamtags",
        "sasl_plain_password": PASSWORD,
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_faust_hands_the_worker_the_same_login_as_every_other_client(
    mechanism: SaslMechanism,
) -> None:
    """Faust's own translation (faust/transport/drivers/aiokafka.py) is what its consumers
    and producers are built with."""
    worker = credentials_to_aiokafka_auth(faust_credentials(sasl(mechanism=mechanism)))
    assert worker == client_options(sasl(mechanism=mechanism))


def test_aiokafka_debug_records_of_a_login_never_carry_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With PLAIN the SASL payload is the password itself; aiokafka logs it at debug."""
    client_options(sasl(mechanism="PLAIN"))
    payload = SaslAuthenticateRequest_v1(f"\0streamtags\0{PASSWORD}".encode())
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("aiokafka.conn").debug("Request to %s:%d %d: %s", "b1", 9094, 3, payload)
    assert PASSWORD not in caplog.text
    assert "Request to b1:9094 3: SaslAuthenticateRequest_v1(<redacted>)" in caplog.text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_broker_is_one_error_naming_the_login_and_the_reason() -> None:
    port = closed_port()
    with pytest.raises(KafkaUnavailable) as error:
        await check_reachable(bootstrap=f"127.0.0.1:{port}", security=sasl(), timeout_ms=2000)
    message = str(error.value)
    assert message.startswith(
        f"cannot use Kafka at 127.0.0.1:{port} (SASL_PLAINTEXT, SCRAM-SHA-256 as 'streamtags'): "
        f"127.0.0.1:{port}: "
    )
    assert "Connect call failed" in message
    assert PASSWORD not in message and "\n" not in message
