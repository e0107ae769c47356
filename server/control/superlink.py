"""``fedrec superlink``: Flower 1.42's own ``flower-superlink``, in this process, with the
two places where stock Flower leaves the control plane open closed:

* the Control API's authentication plugin (a no-op in open-source Flower) replaced by
  :class:`~fedrec.server.control.auth.OperatorKeyAuthnPlugin` (``--operator-keys``: the
  operator's OpenSSH Ed25519 public key(s)): registering, unregistering and listing nodes,
  listing, submitting and stopping runs are the operator's alone;
* with ``--app-signers`` (a trusted-entities file), StartRun accepts only FABs signed by an
  app-signer key and relays the signature to SuperNodes in the FAB's ``verifications``,
  which a SuperNode started with ``--trusted-entities`` checks itself
  (:mod:`fedrec.server.control.signing`).

Every other argument after ``--`` goes to ``flower-superlink`` unchanged. The Runtime API on
the same port (what a ServerApp's SuperExec uses) is Flower's own to protect: it needs
``--isolation process --superexec-auth-secret-file FILE`` and a ``flower-superexec`` started
with the same secret (in the default isolation Flower ignores the secret). This launcher
refuses to start on any Flower but 1.42.x (it replaces module attributes of that version),
and exits if the plugin in the app is not its own (fail closed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

import flwr

SUPPORTED = "1.42."


def install(operator_keys: str, audience: str = "fedrec-superlink",
            max_ttl: int = 24 * 3600, app_signers: str | None = None) -> object:
    """Put the operator plugin (and, with ``app_signers``, the signed-app check) in place
    of Flower's; returns the plugin."""
    if not flwr.__version__.startswith(SUPPORTED):
        raise SystemExit(f"fedrec superlink is written against Flower {SUPPORTED}x, not "
                         f"{flwr.__version__}")
    from fedrec.server.control.auth import OperatorKeyAuthnPlugin
    from fedrec.server.control.tokens import Verifier, load_public_keys

    # (the modules themselves: the packages re-export same-named functions)
    config_loader = import_module("flwr.superlink.config_loader")
    superlink_main = import_module("flwr.superlink.main")
    cli = import_module("flwr.superlink.cli.flower_superlink")
    control_router = import_module("flwr.superlink.routers.control.router")
    control_handlers = import_module("flwr.superlink.servicer.control.control_handlers")

    plugin = OperatorKeyAuthnPlugin(Verifier(tuple(load_public_keys(operator_keys)),
                                             audience, max_ttl))
    # The CLI calls the name it imported; main.py and config_loader.py are the other two
    # places a plugin is loaded from.
    for module in (cli, superlink_main, config_loader):
        module.load_control_authn_plugin = lambda: plugin
    if app_signers:
        from fedrec.server.control.signing import load_signers, wrap_start_run

        signers = load_signers(app_signers)
        # The control router and automation dispatch look the handler up at call time.
        if control_router.control_handlers is not control_handlers:
            raise SystemExit("fedrec superlink: unexpected Flower layout (control router)")
        control_handlers.start_run = wrap_start_run(control_handlers.start_run, signers)
    create_app = superlink_main.create_app

    def checked_create_app(*args: object, **kwargs: object) -> object:
        app = create_app(*args, **kwargs)
        if app.state.account_access_dep.authn_plugin is not plugin:  # fail closed
            raise SystemExit("fedrec superlink: the operator plugin is not installed; "
                             "refusing to serve")
        return app

    superlink_main.create_app = checked_create_app
    return plugin


def main(argv: Sequence[str] | None = None) -> None:
    """``fedrec superlink --operator-keys PUB [--app-signers YAML] -- FLOWER-ARGS...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    ours = argparse.ArgumentParser(prog="fedrec superlink", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    ours.add_argument("--operator-keys", required=True,
                      help="the operator's OpenSSH Ed25519 public key(s), one per line")
    ours.add_argument("--audience", default="fedrec-superlink",
                      help="the name tokens must be made out to")
    ours.add_argument("--max-token-ttl", type=int, default=24 * 3600,
                      help="the longest life a token may claim, in seconds")
    ours.add_argument("--app-signers", default=None,
                      help="trusted-entities YAML: only FABs signed by these keys may run")
    args, rest = ours.parse_known_args(argv)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    install(args.operator_keys, args.audience, args.max_token_ttl, args.app_signers)
    cli = import_module("flwr.superlink.cli.flower_superlink")
    sys.argv = ["flower-superlink", *rest]
    cli.flower_superlink()
