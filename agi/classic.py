"""Classic AGI: `AGI(pbxcrm-agi,<script>[,args...])`, one process per call.

The session goes to `pbxcrm run`'s FastAGI listener when it answers (agi.classic_relay: the
daemon runs the script with its lookup cache and queues a survey rating straight into its
outbox); otherwise, or with `[agi] classic_via_daemon = false`, the script runs in this
process on pyst2 (agi.pyst2_driver). Asterisk starts this program for every call, so this
module imports only what the relay needs; the in-process driver is imported when used.

Config: `--config PATH`, else env PBXCRM_AGI_CONFIG or PBXCRM_CONFIG, else
/etc/pbxcrm/agi.toml. Only `[agi]` and `[[lookup]]` are read, so the file Asterisk's user reads
can be a small one holding just those (config/pbxcrm-agi.example.toml), without the CRM secrets
of pbxcrm.toml. Without any config the session stays here (and says where to put one): where
the daemon listens is not guessed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agi.classic_relay import connect, fastagi_environment, looks_like_environment, relay
from agi.classic_relay import read_environment as read_classic_environment

DEFAULT_CONFIG = "/etc/pbxcrm/agi.toml"
DEFAULT_DAEMON = ("127.0.0.1", 4573)  # AgiSettings' host and port defaults


def config_path(option: str | None) -> str | None:
    """`--config`, the environment, or the default file when it exists; None: nothing found.

    Asterisk starts classic AGI programs with its own environment, which rarely holds ours:
    the default file (or `--config=` in the AGI() arguments) is what works out of the box.
    """
    for candidate in (
        option,
        os.environ.get("PBXCRM_AGI_CONFIG"),
        os.environ.get("PBXCRM_CONFIG"),
    ):
        if candidate:
            return candidate
    return DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None


def daemon_address(config: str | None) -> tuple[str, int] | None:
    """Where the daemon's FastAGI listener is, or None when the session must stay here.

    Only a peek at `[agi]`: a config that does not read cleanly sends the session to the
    in-process driver, which validates it fully and names the mistake.
    """
    if not config:
        return None
    import tomllib

    try:
        with open(config, "rb") as handle:
            section = tomllib.load(handle).get("agi", {})
    except (OSError, ValueError):
        return None
    if not isinstance(section, dict):
        return None
    host = section.get("host", DEFAULT_DAEMON[0])
    port = section.get("port", DEFAULT_DAEMON[1])
    relayed = section.get("enabled", True), section.get("classic_via_daemon", True)
    if relayed != (True, True):
        return None
    if not isinstance(host, str) or type(port) is not int or not 0 < port <= 65535:
        return None
    return host, port


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pbxcrm-agi", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help=f"default: $PBXCRM_AGI_CONFIG, then {DEFAULT_CONFIG}")
    parser.add_argument("script", help="caller_check, crm_lookup or survey")
    parser.add_argument("args", nargs="*")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = _parse(argv)
    config = config_path(options.config)
    address = daemon_address(config)
    stdin_fd = sys.stdin.fileno()
    environment = read_classic_environment(stdin_fd)
    if address is not None and looks_like_environment(environment):
        sock = connect(*address)
        if sock is not None:
            fastagi = fastagi_environment(environment, options.script, options.args)
            if relay(sock, fastagi, stdin_fd, sys.stdout.fileno()):
                return 0  # the daemon logged the outcome; a hang-up is a normal end
    from agi.pyst2_driver import run_in_process

    return run_in_process(options.script, options.args, config, environment)


if __name__ == "__main__":
    sys.exit(main())
