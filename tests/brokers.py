"""A real mosquitto for tests (and benchmarks): own port, users, ACL, TLS, never a running one.

`Broker` writes a config under a directory of its own: a plain listener and a TLS listener on
free ports of 127.0.0.1, a mutual-TLS listener, a password file (`mosquitto_passwd`), an ACL and
`persistence false`. It can be killed and started again on the same ports (outage tests).
Certificates (a CA, the server's, a client's) are made with the `cryptography` package.
Nothing here imports pytest, so `appliance bench` can use it as well.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import ipaddress
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.bench.broker import mosquitto_path as mosquitto_binary
from hardware.fakes.ports import free_port

MOSQUITTO_MISSING = "mosquitto not found: install Debian package mosquitto (and mosquitto-clients)"

# Users of the test broker and their passwords.
USERS = {
    "appliance": "appliance-secret",
    "tester": "tester-secret",
    "restricted": "restricted-secret",
}

# The appliance may use its prefixes; "tester" (the OT side) everything; "restricted" everything
# of the appliance except results, so that denied publishes can be observed.
ACL = """\
user appliance
topic readwrite vision/#
topic readwrite spBv1.0/#
topic readwrite homeassistant/#

user tester
topic readwrite #

user restricted
topic readwrite vision/#
topic deny vision/+/line/+/result
"""


@dataclass(frozen=True)
class Certs:
    """PEM files: the CA, the server's certificate and key, a client certificate and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(directory: Path) -> Certs:
    """A throwaway CA signing a server certificate (127.0.0.1, localhost) and a client one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("appliance test CA"))
        .issuer_name(name("appliance test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None) -> tuple:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = leaf("appliance", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    return Certs(
        ca=write_cert(ca_cert, directory / "ca.pem"),
        server_cert=write_cert(server_cert, directory / "server.pem"),
        server_key=write_key(server_key, directory / "server.key"),
        client_cert=write_cert(client_cert, directory / "client.pem"),
        client_key=write_key(client_key, directory / "client.key"),
    )


class Broker:
    """One mosquitto process with its config, restartable on the same ports."""

    def __init__(self, directory: Path, *, certs: Certs | None = None, extra_config: str = "") -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError(MOSQUITTO_MISSING)
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.certs = certs or make_certs(directory / "certs")
        self.host = "127.0.0.1"
        self.port = 0
        self.tls_port = 0
        self.mtls_port = 0
        self.log = self.dir / "mosquitto.log"
        self.extra_config = extra_config  # more mosquitto.conf lines (general options)
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_auth()

    def _write_auth(self) -> None:
        passwd = self.dir / "passwd"
        passwd.unlink(missing_ok=True)
        for i, (user, password) in enumerate(USERS.items()):
            args = ["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [str(passwd), user, password]
            subprocess.run(args, check=True, capture_output=True, timeout=30)
        passwd.chmod(0o600)
        (self.dir / "acl").write_text(ACL)
        (self.dir / "acl").chmod(0o600)
        for user, password in USERS.items():
            path = self.dir / f"{user}.password"
            path.write_text(password + "\n")
            path.chmod(0o600)

    def password_file(self, user: str) -> Path:
        """A file holding `user`'s password (as the appliance reads it)."""
        return self.dir / f"{user}.password"

    def _write_config(self) -> Path:
        c = self.certs
        config = self.dir / "mosquitto.conf"
        config.write_text(
            # As root, mosquitto would switch to user "mosquitto", who cannot read our 0600 files.
            f"user {getpass.getuser()}\n"
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"password_file {self.dir / 'passwd'}\n"
            f"acl_file {self.dir / 'acl'}\n"
            "persistence false\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
            "max_queued_messages 100000\n"
            f"{self.extra_config}"
            f"listener {self.port} {self.host}\n"
            f"listener {self.tls_port} {self.host}\n"
            f"cafile {c.ca}\ncertfile {c.server_cert}\nkeyfile {c.server_key}\n"
            f"listener {self.mtls_port} {self.host}\n"
            f"cafile {c.ca}\ncertfile {c.server_cert}\nkeyfile {c.server_key}\n"
            "require_certificate true\n"
        )
        return config

    def start(self, timeout: float = 10.0) -> None:
        """Start (first time: on free ports; later: on the same ports) and wait until it listens."""
        if self.running:
            return
        first = self.port == 0
        for _attempt in range(5):
            if first:
                self.port, self.tls_port, self.mtls_port = free_port(), free_port(), free_port()
            config = self._write_config()
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if self._wait_listening(timeout):
                return
            self._reap()
            if not first:
                time.sleep(0.5)  # the old socket may linger a moment; try the same ports again
        raise RuntimeError(f"mosquitto did not start; see {self.log}")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            ready = True
            for port in (self.port, self.tls_port, self.mtls_port):
                try:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        pass
                except OSError:
                    ready = False
                    break
            if ready:
                return True
            time.sleep(0.05)
        return False

    def _reap(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(10)
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): an outage, not a shutdown."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        """Stop cleanly."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()

    @property
    def running(self) -> bool:
        """The process is up."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """The broker's log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Listener:
    """A test-side MQTT client (the OT system): subscribes, records, publishes commands."""

    def __init__(
        self, broker: Broker, topics: list[str], *, user: str = "tester", client_id: str = ""
    ) -> None:
        import threading

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"listener-{id(self)}", protocol=paho.MQTTv5
        )
        self.client.username_pw_set(user, USERS[user])
        self.client.reconnect_delay_set(0.1, 0.5)

        def on_connect(client, _u, _f, reason, _p):
            if not reason.is_failure and topics:
                client.subscribe([(t, 1) for t in topics])
            elif not topics:
                self._subscribed.set()

        def on_subscribe(_c, _u, _mid, _codes, _p):
            self._subscribed.set()

        def on_message(_c, _u, message):
            with self._cond:
                self.messages.append(message)
                self._cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("listener could not subscribe")

    def wait_for(self, predicate, timeout: float = 10.0) -> list:
        """Wait until predicate(messages) is truthy; return the messages."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met; {len(self.messages)} message(s) seen")
                self._cond.wait(remaining)
            return list(self.messages)

    def on(self, topic: str) -> list:
        """Messages seen on one topic."""
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def publish(
        self, topic: str, payload: bytes | str, *, retain: bool = False, expiry_s: int | None = None
    ) -> None:
        """Publish (QoS 1) and wait for the PUBACK."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = None
        if expiry_s is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = expiry_s
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        info.wait_for_publish(10)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # paho leaves its socket pair to __del__


class Gate:
    """A TCP forwarder in front of a broker port that a test can close and open.

    Closing cuts every connection through it at once (the broker sees the client vanish, so it
    publishes the Will) and refuses new ones until it is opened again: a network outage whose
    end the test controls.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        import threading

        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((self.host, 0))
        self._server.listen(16)
        self._server.settimeout(0.1)
        self.port = int(self._server.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="gate", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Cut all connections and refuse new ones."""
        self._open.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def open(self) -> None:
        """Let connections through again."""
        self._open.set()

    def stop(self) -> None:
        """Close for good."""
        self.close()
        self._stop.set()
        self._thread.join(2)
        self._server.close()
