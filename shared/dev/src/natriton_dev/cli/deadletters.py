"""``natriton deadletters``: messages the mesh could not process (the JetStream stream ``NATRITON_DEAD_LETTERS``).

    natriton deadletters ls [--stream S] [--limit N]      oldest first: stream, subject, deliveries, error
    natriton deadletters show SEQ                         one dead letter: the error, the original headers and body
    natriton deadletters replay SEQ | --all [--delete]    publish the original again to its subject (a new id)

A message becomes a dead letter when its handler fails with a permanent error, when a transient error persists to
its last delivery, or when it is delivered ``max_deliver`` times without an answer (``natriton.deadletters``).
``replay`` publishes the original body and headers to the original subject and stream with a new ``Nats-Msg-Id``
(JetStream would drop the old one as a duplicate) and a fresh ``Natriton-Deadline`` (``--deadline-s``); ``--delete``
removes the dead letter once the stream has stored the replayed message.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer
from rich.text import Text

from natriton_client.protocol import ErrorCode
from natriton_dev.cli.common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    ERROR_EXIT_CODES,
    EXIT_FAILED,
    EXIT_USAGE,
    CliError,
    ConnectTimeoutOption,
    JsonOption,
    NatsUrlOption,
    Output,
    PlainTable,
    VerboseOption,
    close_quietly,
    connect_nats,
    reported,
    resolve_nats_url,
    run,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext

    from natriton.deadletters import DeadLetter

EXIT_NOT_FOUND = ERROR_EXIT_CODES[ErrorCode.NOT_FOUND]
BODY_PREVIEW_BYTES = 4096
DEFAULT_LIMIT = 100

app = typer.Typer(
    name="deadletters",
    help="Dead letters: natriton deadletters ls | show SEQ | replay SEQ|--all [--delete].",
    no_args_is_help=True,
)
SeqArgument = Annotated[int, typer.Argument(min=1, help="The dead letter's sequence (the first column of ls).")]
StreamOption = Annotated[
    str | None, typer.Option("--stream", help="Only dead letters from this stream (e.g. NATRITON_FRAMES_RELIABLE).")
]


# ------------------------------------------------------------------------------------------------ reading
async def _connect(nats_url: str | None, connect_timeout: float, out: Output) -> tuple[NATS, str]:
    resolved = resolve_nats_url(nats_url)
    out.note(f"NATS {resolved.describe()}")
    return await connect_nats(resolved.url, connect_timeout, name="natriton-deadletters"), resolved.url


async def _total(js: JetStreamContext) -> int | None:
    """Dead letters stored; None when the stream does not exist (no preprocess has started yet)."""
    from nats.errors import NoRespondersError
    from nats.js.errors import NotFoundError, ServiceUnavailableError

    from natriton.deadletters import STREAM

    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        return None
    except (NoRespondersError, ServiceUnavailableError):
        raise CliError("JetStream is not enabled on the NATS server", EXIT_FAILED) from None
    return int(info.state.messages)


async def read_letters(
    js: JetStreamContext, *, stream: str | None, limit: int, timeout_s: float
) -> list[tuple[int, DeadLetter | None]]:
    """Up to ``limit`` dead letters, oldest first, with their sequence (None for one that does not decode)."""
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from natriton.deadletters import STREAM, SUBJECT_PREFIX, decode

    subject = f"{SUBJECT_PREFIX}.{stream}.>" if stream else f"{SUBJECT_PREFIX}.>"
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, mem_storage=True, inactive_threshold=30.0
    )
    subscription = await js.pull_subscribe(subject, stream=STREAM, config=config)
    found: list[tuple[int, DeadLetter | None]] = []
    try:
        while len(found) < limit:
            try:
                batch = await subscription.fetch(min(256, limit - len(found)), timeout=timeout_s)
            except (NatsTimeoutError, TimeoutError):
                break  # nothing (more) to read
            for msg in batch:
                try:
                    letter: DeadLetter | None = decode(msg.data)
                except msgspec.MsgspecError:
                    letter = None
                found.append((msg.metadata.sequence.stream, letter))
            if not batch or batch[-1].metadata.num_pending == 0:
                break
    finally:
        await subscription.unsubscribe()
    return found[:limit]


async def read_letter(js: JetStreamContext, seq: int) -> DeadLetter:
    """Dead letter ``seq``; CliError (exit 11) when there is none."""
    from nats.js.errors import NotFoundError

    from natriton.deadletters import STREAM, decode

    try:
        raw = await js.get_msg(STREAM, seq)
    except NotFoundError:
        raise CliError(f"no dead letter {seq} (natriton deadletters ls lists them)", EXIT_NOT_FOUND) from None
    try:
        return decode(raw.data or b"")
    except msgspec.MsgspecError as exc:
        raise CliError(f"message {seq} of the dead-letter stream is no dead letter ({exc})") from None


def summary(seq: int, letter: DeadLetter | None) -> dict[str, Any]:
    """One dead letter without its body (for ls)."""
    if letter is None:
        return {"seq": seq, "decode_error": True}
    document = msgspec.to_builtins(letter)
    document.pop("data", None)
    document.pop("headers", None)
    return {"seq": seq, **document, "size": len(letter.data)}


def body_view(data: bytes) -> Any:
    """The original body as something readable: msgpack or JSON decoded, else text, else None."""
    for decoder in (msgspec.msgpack.decode, msgspec.json.decode):
        try:
            return json.loads(json.dumps(decoder(data), default=_bytes_text))
        except (msgspec.MsgspecError, TypeError, ValueError):
            continue
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _bytes_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    raise TypeError(type(value).__name__)


def when(ms: int) -> str:
    """Epoch milliseconds as local time to the second ('-' for 0)."""
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


# ------------------------------------------------------------------------------------------------ commands
@app.command("ls")
def list_command(
    stream: StreamOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many (the oldest).")] = DEFAULT_LIMIT,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Dead letters, oldest first: sequence, when, the stream and subject it came from, deliveries, the error.

    JSON: {"ok", "nats_url", "total", "dead_letters": [{"seq", "stream", "stream_seq", "subject", "consumer",
    "deliveries", "reason", "code", "message", "dead_at_ms", "published_ms", "writer", "size"}]}.
    """
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        total, url, rows = run(_list(stream, limit, nats_url, connect_timeout, out))
        out.emit({"ok": True, "nats_url": url, "total": total or 0, "dead_letters": rows})
        if out.json_mode:
            return
        if total is None:
            out.print("no dead letters (the stream NATRITON_DEAD_LETTERS does not exist yet)")
            return
        if not rows:
            out.print("no dead letters" + (f" from {stream}" if stream else ""))
            return
        out.print(letters_table(rows))
        if len(rows) < total and not stream:
            out.print(f"{len(rows)} of {total} shown (--limit)")


async def _list(
    stream: str | None, limit: int, nats_url: str | None, connect_timeout: float, out: Output
) -> tuple[int | None, str, list[dict[str, Any]]]:
    nc, url = await _connect(nats_url, connect_timeout, out)
    try:
        js = nc.jetstream(timeout=connect_timeout)
        total = await _total(js)
        if not total:
            return total, url, []
        letters = await read_letters(js, stream=stream, limit=limit, timeout_s=min(connect_timeout, 1.0))
    finally:
        await close_quietly(nc)
    return total, url, [summary(seq, letter) for seq, letter in letters]


def letters_table(rows: list[dict[str, Any]]) -> PlainTable:
    """One row per dead letter."""
    table = PlainTable(
        "seq", "dead at", "stream", "#", "subject", "deliveries", "reason", "error", box=None, header_style="bold"
    )
    for row in rows:
        if row.get("decode_error"):
            table.add_row(str(row["seq"]), "-", "-", "-", Text("does not decode", style="red"), "-", "-", "-")
            continue
        error = f"{row['code']}: {row['message']}" if row["code"] else row["message"]
        table.add_row(
            Text(str(row["seq"]), style="bold"),
            when(row["dead_at_ms"]),
            row["stream"],
            str(row["stream_seq"]),
            row["subject"],
            str(row["deliveries"]),
            row["reason"],
            Text(error if len(error) <= 100 else error[:99] + "…", style="red"),
        )
    return table


@app.command("show")
def show_command(
    seq: SeqArgument,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """One dead letter: where it came from, the error, the delivery count, its original headers and body (decoded
    when it is msgpack or JSON). Exits 11 when there is no such dead letter.

    JSON: {"ok", "seq", "stream", "stream_seq", "subject", "consumer", "deliveries", "reason", "code", "message",
    "dead_at_ms", "published_ms", "writer", "headers", "data_base64", "body"}.
    """
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        letter = run(_show(seq, nats_url, connect_timeout, out))
        document = msgspec.to_builtins(letter)
        document.pop("data", None)
        body = body_view(letter.data)
        data_base64 = base64.b64encode(letter.data).decode()
        out.emit({"ok": True, "seq": seq, **document, "data_base64": data_base64, "body": body})
        if out.json_mode:
            return
        error = f"{letter.code}: {letter.message}" if letter.code else letter.message
        out.print(Text.assemble(("dead letter ", "bold"), (str(seq), "bold"), f"  ({letter.reason.value})"))
        lines = [
            ("from", f"{letter.stream} #{letter.stream_seq} on {letter.subject} (consumer {letter.consumer})"),
            ("error", error),
            ("deliveries", str(letter.deliveries)),
            ("published", when(letter.published_ms)),
            ("dead at", when(letter.dead_at_ms) + (f" by {letter.writer}" if letter.writer else "")),
        ]
        for name, value in lines:
            out.print(Text.assemble((f"  {name:<11}", "dim"), value))
        out.print(Text("  headers", style="dim"))
        for name, value in sorted(letter.headers.items()):
            out.print(f"    {name}: {value}")
        out.print(Text(f"  body ({len(letter.data)} bytes)", style="dim"))
        if body is None:
            preview = letter.data[:BODY_PREVIEW_BYTES].hex(" ")
            out.print(f"    {preview}" + (" …" if len(letter.data) > BODY_PREVIEW_BYTES else ""))
        else:
            shown = body if isinstance(body, str) else json.dumps(body, indent=2)
            out.print("\n".join(f"    {line}" for line in shown.splitlines()))


async def _show(seq: int, nats_url: str | None, connect_timeout: float, out: Output) -> DeadLetter:
    nc, _ = await _connect(nats_url, connect_timeout, out)
    try:
        return await read_letter(nc.jetstream(timeout=connect_timeout), seq)
    finally:
        await close_quietly(nc)


@app.command("replay")
def replay_command(
    seq: Annotated[
        int | None, typer.Argument(min=1, help="The dead letter to replay (or --all).", show_default=False)
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter (of --stream).")] = False,
    stream: StreamOption = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove each dead letter once replayed.")] = False,
    deadline_s: Annotated[
        float, typer.Option("--deadline-s", min=0.1, help="A replayed Natriton message's new deadline, from now.")
    ] = 60.0,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Publish dead letters' original messages again to their original subject and stream, with a new
    Nats-Msg-Id; --delete removes each dead letter once its stream has stored the replay. Exits 11 when there is no
    such dead letter.

    JSON: {"ok", "nats_url", "replayed": [{"seq", "stream", "subject", "new_stream_seq", "deleted"}]}.
    """
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        if (seq is None) == (not replay_all):
            raise CliError("give one dead letter's SEQ or --all", EXIT_USAGE)
        url, replayed = run(_replay(seq, stream, delete, deadline_s, nats_url, connect_timeout, out))
        out.emit({"ok": True, "nats_url": url, "replayed": replayed})
        if not replayed:
            out.print("no dead letters to replay")
        for row in replayed:
            deleted = ", dead letter deleted" if row["deleted"] else ""
            out.print(f"replayed {row['seq']} to {row['subject']} ({row['stream']} #{row['new_stream_seq']}{deleted})")


async def _replay(
    seq: int | None,
    stream: str | None,
    delete: bool,
    deadline_s: float,
    nats_url: str | None,
    connect_timeout: float,
    out: Output,
) -> tuple[str, list[dict[str, Any]]]:
    from nats.errors import Error as NatsError
    from nats.js.errors import NotFoundError

    from natriton.deadletters import replay

    nc, url = await _connect(nats_url, connect_timeout, out)
    try:
        js = nc.jetstream(timeout=connect_timeout)
        if seq is not None:
            await read_letter(js, seq)  # exit 11 when there is none
            seqs = [seq]
        else:
            found = await read_letters(js, stream=stream, limit=1 << 30, timeout_s=min(connect_timeout, 1.0))
            seqs = [s for s, letter in found if letter is not None]
        replayed = []
        for number in seqs:
            try:
                async with asyncio.timeout(connect_timeout + 2.0):
                    letter, ack = await replay(js, number, delete=delete, deadline_s=deadline_s)
            except NotFoundError:
                out.warn(f"dead letter {number} is gone (replayed and deleted meanwhile?)")
                continue
            except (NatsError, TimeoutError) as exc:
                raise CliError(f"could not replay dead letter {number}: {type(exc).__name__} {exc}") from None
            row = {"seq": number, "stream": ack.stream, "subject": letter.subject, "new_stream_seq": ack.seq}
            replayed.append({**row, "deleted": delete})
    finally:
        await close_quietly(nc)
    return url, replayed
