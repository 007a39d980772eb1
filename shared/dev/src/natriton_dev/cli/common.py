"""What every ``natriton`` command shares: options, where URLs come from, output, NATS connections, errors.

Exit codes (every command):

- 0: done, everything fine
- 1: done, but what was asked for failed (``status``: something essential is down)
- 2: usage error or bad input (an unknown option, a missing file, an invalid value)
- 3: a server cannot be reached (NATS refused the connection, timed out, unknown host)
- 4: the mesh did not answer (nothing listens on the subject, or no reply in time)
- 10-16: ``infer``: the mesh answered with a typed error (see :data:`ERROR_EXIT_CODES`)
- 130: interrupted (Ctrl-C)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn, TypeVar

import msgspec
import typer
from nats.aio.client import Client as NATS
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from natriton_client.protocol import ErrorCode
from natriton_dev.cli.state import StackState, running_stack

T = TypeVar("T")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_NO_ANSWER: Final = 4
EXIT_INTERRUPTED: Final = 130
ERROR_EXIT_CODES: Final[dict[ErrorCode, int]] = {
    ErrorCode.INVALID_ARGUMENT: 10,
    ErrorCode.NOT_FOUND: 11,
    ErrorCode.PAYLOAD_TOO_LARGE: 12,
    ErrorCode.DEADLINE_EXCEEDED: 13,
    ErrorCode.OVERLOADED: 14,
    ErrorCode.UNAVAILABLE: 15,
    ErrorCode.INTERNAL: 16,
}
"""``natriton infer``'s exit status for each typed error the mesh can answer with."""

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_CONNECT_TIMEOUT_S: Final = 3.0
EXIT_CODES_HELP: Final = (
    "Exit status: 0 ok, 1 failed, 2 usage error, 3 server unreachable, 4 no answer from the mesh, "
    "10-16 typed error (infer), 130 interrupted."
)

# ------------------------------------------------------------------------------------------------ options
NatsUrlOption = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        help="NATS server(s), comma-separated. Default: NATRITON_NATS_URL, then the running local stack "
        "(natriton up), then nats://127.0.0.1:4222.",
        show_default=False,
    ),
]
RedisUrlOption = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="Redis of the result cache. Default: NATRITON_REDIS_URL, then the running local stack, "
        "then redis://127.0.0.1:6379/0.",
        show_default=False,
    ),
]
ConnectTimeoutOption = Annotated[
    float, typer.Option("--connect-timeout", min=0.1, help="Seconds to wait for a server to accept a connection.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout (stable keys).")]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Say which URLs are used and why, and more detail.")
]


# ------------------------------------------------------------------------------------------------ errors
class CliError(Exception):
    """A failure to report as one line (``error: <message>``) with an exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.detail = detail
        """Extra lines (a log tail) printed dimmed below the error, never in JSON mode's stdout."""


def shown_url(url: str) -> str:
    """A URL with any ``user:password@`` masked, for messages."""
    from natriton.settings import redact

    return str(redact("url", url))


# ------------------------------------------------------------------------------------------------ output
class Output:
    """Where a command writes: rich text (or JSON) on stdout, notes and errors on stderr."""

    def __init__(self, *, json_mode: bool = False, verbose: bool = False) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        self.console = Console(highlight=False, width=_width(sys.stdout))
        self.err = Console(stderr=True, highlight=False, width=_width(sys.stderr))

    def note(self, message: str) -> None:
        """A line on stderr shown only with ``--verbose``."""
        if self.verbose:
            self.err.print(message, style="dim", markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        """A warning on stderr (always)."""
        self.err.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Human output on stdout (nothing in JSON mode)."""
        if not self.json_mode:
            kwargs.setdefault("markup", False)  # paths and messages may hold brackets
            self.console.print(*objects, **kwargs)

    def emit(self, document: Mapping[str, Any]) -> None:
        """The JSON document of a command on stdout (JSON mode only)."""
        if self.json_mode:
            print_json(document)

    def error(self, error: CliError) -> None:
        """One line on stderr (and in JSON mode, ``{"ok": false, "error": ...}`` on stdout)."""
        self.err.print(Text.assemble(("error: ", "bold red"), error.message), soft_wrap=True)
        if error.detail and not self.json_mode:
            self.err.print(error.detail.rstrip(), style="dim", markup=False, highlight=False)
        if self.json_mode:
            print_json({"ok": False, "error": {"message": error.message, "exit_code": error.exit_code}})


class PlainTable(Table):
    """A rich Table whose string cells are shown as they are: never parsed as markup (labels, paths, lists)."""

    def add_row(self, *renderables: RenderableType | None, **kwargs: Any) -> None:
        """Add a row; ``str`` cells become plain :class:`~rich.text.Text`."""
        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **kwargs)


def plain(value: Any) -> Any:
    """Any msgspec value as JSON-compatible builtins (lists, not tuples; bytes as base64)."""
    return msgspec.json.decode(msgspec.json.encode(value))


def _width(stream: Any) -> int | None:
    """Terminal width on a terminal (rich decides); wide when piped, so lines and tables are not folded at 80."""
    try:
        interactive = bool(stream.isatty())
    except (AttributeError, ValueError):
        interactive = False
    return None if interactive or os.environ.get("COLUMNS") else 200


def print_json(document: Mapping[str, Any]) -> None:
    """Indented JSON on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def reported(out: Output) -> Iterator[None]:
    """Turn :class:`CliError`, Ctrl-C and unexpected exceptions into one line on stderr and an exit status.

    Set ``NATRITON_DEBUG=1`` to see the traceback of an unexpected exception instead.
    """
    try:
        yield
    except CliError as exc:
        out.error(exc)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        out.err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if os.environ.get("NATRITON_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else ""
        out.error(CliError(f"unexpected {type(exc).__name__}: {message} (NATRITON_DEBUG=1 shows the traceback)"))
        raise typer.Exit(EXIT_FAILED) from None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a fresh event loop."""
    return asyncio.run(coroutine)


# ------------------------------------------------------------------------------------------------ URLs
@dataclass(frozen=True, slots=True)
class Resolved:
    """A URL and where it came from (for ``--verbose`` and JSON output)."""

    url: str
    source: str
    """``option`` (a command-line flag), ``env`` (a NATRITON_* variable), ``local stack`` or ``default``."""
    detail: str = ""
    """The flag, variable or state file it was read from."""

    def describe(self) -> str:
        """E.g. ``nats://127.0.0.1:4222 (from NATRITON_NATS_URL)``."""
        return f"{shown_url(self.url)} (from {self.detail or self.source})"


def _resolve(
    option: str | None,
    option_name: str,
    variable: str,
    from_state: Callable[[StackState], str],
    default: str,
    environ: Mapping[str, str] | None,
    stack: StackState | bool | None,
) -> Resolved:
    env = os.environ if environ is None else environ
    if option:
        return Resolved(option, "option", option_name)
    if env.get(variable):
        return Resolved(env[variable], "env", variable)
    found = running_stack(env) if stack is True else (stack or None)
    if found is not None and from_state(found):
        return Resolved(from_state(found), "local stack", f"the local stack's state file {found.path}")
    return Resolved(default, "default", "the default")


def resolve_nats_url(
    option: str | None = None, *, environ: Mapping[str, str] | None = None, stack: StackState | bool | None = True
) -> Resolved:
    """The NATS URL: ``--nats-url``, then ``NATRITON_NATS_URL``, then a running local stack, then the default.

    ``stack``: True looks for the state file of a running local stack; None skips it; a state uses that one.
    """
    return _resolve(option, "--nats-url", "NATRITON_NATS_URL", lambda s: s.nats_url, DEFAULT_NATS_URL, environ, stack)


def resolve_redis_url(
    option: str | None = None, *, environ: Mapping[str, str] | None = None, stack: StackState | bool | None = True
) -> Resolved:
    """The Redis URL, in the same order as :func:`resolve_nats_url`."""
    return _resolve(
        option, "--redis-url", "NATRITON_REDIS_URL", lambda s: s.redis_url, DEFAULT_REDIS_URL, environ, stack
    )


# ------------------------------------------------------------------------------------------------ NATS
def connect_error_reason(exc: BaseException) -> str:
    """A few words for why a connection failed (``connection refused``, ``timed out``, ``unknown host``)."""
    import nats.errors

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | nats.errors.TimeoutError):
        return "timed out"
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization violation"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).removeprefix("nats: ").strip()
    return text or type(exc).__name__


def nats_security_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Credentials, NKey, TLS and inbox prefix for every command's NATS connection, from the services' variables
    (``NATRITON_NATS_CREDS_FILE``, ``NATRITON_NATS_NKEY_SEED_FILE``, ``NATRITON_NATS_TLS_CA_FILE``,
    ``NATRITON_NATS_TLS_CERT_FILE``, ``NATRITON_NATS_TLS_KEY_FILE``, ``NATRITON_NATS_INBOX_PREFIX``); a bad value
    is a usage error."""
    from natriton_client.aio import connection_options

    env = os.environ if environ is None else environ

    def var(name: str) -> str:
        return env.get(f"NATRITON_NATS_{name}", "").strip()

    try:
        return connection_options(
            var("CREDS_FILE"),
            var("NKEY_SEED_FILE"),
            var("TLS_CA_FILE"),
            var("TLS_CERT_FILE"),
            var("TLS_KEY_FILE"),
            var("INBOX_PREFIX"),
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a missing or bad certificate or key
        raise CliError(f"NATS TLS settings: {type(exc).__name__}: {exc}", EXIT_USAGE) from None


async def connect_nats(url: str, timeout_s: float, *, name: str = "natriton-cli") -> NATS:
    """Connect within ``timeout_s`` or raise :class:`CliError` (exit 3) with the reason, never retrying for long.

    Authenticates and speaks TLS as the ``NATRITON_NATS_*`` variables say (:func:`nats_security_options`)."""
    import nats

    errors: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    servers = [u.strip() for u in url.split(",") if u.strip()]
    security = nats_security_options()
    try:
        async with asyncio.timeout(timeout_s + 1.0):
            return await nats.connect(
                servers,
                name=name,
                connect_timeout=timeout_s,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=on_error,
                **security,
            )
    except Exception as exc:
        cause = errors[-1] if errors and not isinstance(exc, TimeoutError) else exc
        raise CliError(
            f"cannot reach NATS at {shown_url(url)} ({connect_error_reason(cause)})", EXIT_UNREACHABLE
        ) from None


async def close_quietly(nc: NATS) -> None:
    """Close a connection, ignoring a server that is already gone."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await nc.close()


async def control_request(
    url: str, connect_timeout: float, timeout_s: float, subject: str, payload: bytes, codec: Any, service: str
) -> Any:
    """Send one control request to ``subject`` and decode the answer with ``codec`` (``service`` names who
    should answer, for the error message when nothing does)."""
    import msgspec
    import nats.errors

    nc = await connect_nats(url, connect_timeout, name="natriton-control")
    try:
        msg = await nc.request(subject, payload, timeout=timeout_s)
    except nats.errors.NoRespondersError:
        raise CliError(
            f"nothing answers on {subject} at {shown_url(url)} (is the {service} running?)", EXIT_NO_ANSWER
        ) from None
    except nats.errors.TimeoutError:
        raise CliError(f"no answer from the {service} within {timeout_s:g} s", EXIT_NO_ANSWER) from None
    finally:
        await close_quietly(nc)
    try:
        return codec.decode(msg.data, json=msg.data[:1] == b"{")
    except msgspec.MsgspecError as exc:
        raise CliError(f"the answer does not decode: {exc}", EXIT_NO_ANSWER) from None


def server_version(nc: NATS) -> str:
    """The NATS server's version, e.g. ``2.15.1``."""
    version = nc.connected_server_version
    try:
        text = f"{version.major}.{version.minor}.{version.patch}"
        return f"{text}-{version.prerelease}" if version.prerelease else text
    except (ValueError, TypeError):
        return repr(version).removeprefix("<nats server v").removesuffix(">")


def fail(message: str, exit_code: int = EXIT_FAILED) -> NoReturn:
    """Raise a :class:`CliError`."""
    raise CliError(message, exit_code)


def existing_file(path: Path, what: str = "file") -> Path:
    """``path`` if it is a readable file, else a usage error."""
    if not path.is_file():
        raise CliError(f"no such {what}: {path}", EXIT_USAGE)
    return path
