"""The HTTP server part shared by the channel simulators: serve on 127.0.0.1 in a daemon thread, stop cleanly."""

import threading
from http.server import ThreadingHTTPServer


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
