"""The parts shared by the channel simulators: serve on 127.0.0.1 in a daemon thread, stop
cleanly, and generate the RSA key pairs a simulator and its caller sign with."""

import logging
import threading
from http.server import ThreadingHTTPServer

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

logger = logging.getLogger(__name__)


def write_key_pairs(key_dir, names):
    """Write a new 2048-bit RSA key pair as NAME_private.pem (PKCS#8) and NAME_public.pem for each name into `key_dir`."""
    key_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        (key_dir / f"{name}_private.pem").write_bytes(private)
        public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        (key_dir / f"{name}_public.pem").write_bytes(public)


def run_until_interrupted(simulator):
    """Block while the simulator's server thread runs; on Ctrl-C, or when the thread ends, stop the simulator."""
    try:
        while simulator.thread.is_alive():
            simulator.thread.join(timeout=0.5)
    except KeyboardInterrupt:
        logger.info("Stopping")
    finally:
        simulator.stop()


class SimulatorServer:
    """Mixin for a simulator with a `stopping` event and a request handler class bound to it."""

    server = None
    thread = None

    def serve(self, handler_class, port, name):
        """Serve `handler_class`, bound to this simulator, on 127.0.0.1:`port`; return the port."""
        handler = type("Handler", (handler_class,), {"simulator": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)
        self.thread.start()
        return self.server.server_port

    def stop(self):
        """Stop deliveries and the server, waiting up to 5 seconds for its thread."""
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)
