"""ClientApp factories for tests that run devices in worker processes (they must be
importable by a fresh interpreter, so they live at module level)."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp


def failing_client_app() -> ClientApp:
    """A device whose training always raises."""
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        raise RuntimeError("device battery died")

    return app
