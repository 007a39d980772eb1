"""Change routing policies at run time (no restarts): ``python -m natriton_router.routes``.

    python -m natriton_router.routes show
    python -m natriton_router.routes set mobilenet_v2 --weights 1=90,2=10 --shadow 2 --shadow-fraction 0.5
    python -m natriton_router.routes clear mobilenet_v2

Policies live in the NATS KV bucket ``natriton_routes``; every router copy follows changes within
milliseconds. Requests that name a version always get that version.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys

import msgspec
import nats
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from natriton.catalog import open_bucket, put_route
from natriton.messages import Codec, RoutePolicy
from natriton.settings import CommonSettings, load_settings
from natriton.subjects import ROUTES_BUCKET

_CODEC: Codec[RoutePolicy] = Codec(RoutePolicy)


def parse_weights(text: str) -> dict[str, float]:
    """``"1=90,2=10"`` → ``{"1": 90.0, "2": 10.0}``."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        version, _, weight = (p.strip() for p in part.partition("="))
        if not version or not weight:
            raise argparse.ArgumentTypeError(f"expected VERSION=WEIGHT, got {part!r}")
        try:
            weights[version] = float(weight)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"weight of version {version} is not a number: {weight!r}") from exc
        if not 0 <= weights[version] < math.inf:
            raise argparse.ArgumentTypeError(f"weight of version {version} must be a finite number >= 0")
    return weights


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats-url", help="default: NATRITON_NATS_URL or nats://127.0.0.1:4222")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print the policies")
    show.add_argument("model", nargs="?")
    put = commands.add_parser("set", help="set a model's policy")
    put.add_argument("model")
    put.add_argument("--weights", type=parse_weights, default={}, help="VERSION=WEIGHT,... (empty: latest)")
    put.add_argument("--shadow", default="", help="version to mirror traffic to")
    put.add_argument("--shadow-fraction", type=float, default=1.0, help="share of requests mirrored (0-1)")
    clear = commands.add_parser("clear", help="remove a model's policy (latest version answers)")
    clear.add_argument("model")
    return parser


async def run(args: argparse.Namespace) -> int:
    """Carry out one command against the bucket."""
    url = args.nats_url or load_settings(CommonSettings).nats_url
    nc = await nats.connect(url, name="natriton-routes-cli")
    try:
        kv = await open_bucket(nc, ROUTES_BUCKET, create=True)
        if args.command == "set":
            if not 0 <= args.shadow_fraction <= 1:
                print("--shadow-fraction must be between 0 and 1", file=sys.stderr)
                return 2
            policy = RoutePolicy(
                model=args.model, weights=args.weights, shadow_version=args.shadow, shadow_fraction=args.shadow_fraction
            )
            revision = await put_route(kv, policy)
            print(f"{args.model}: {msgspec.json.encode(policy).decode()} (revision {revision})")
        elif args.command == "clear":
            await kv.delete(args.model)
            print(f"{args.model}: policy removed; the latest version answers")
        else:
            keys = [args.model] if args.model else await _keys(kv)
            for key in keys:
                entry = await kv.get(key)
                if entry.value:
                    policy = _CODEC.decode(entry.value)
                    print(f"{key}: {msgspec.json.encode(policy).decode()} (revision {entry.revision})")
    finally:
        await nc.close()
    return 0


async def _keys(kv: KeyValue) -> list[str]:
    try:
        return sorted(await kv.keys())
    except NoKeysError:
        return []


def main() -> None:
    """Entry point."""
    sys.exit(asyncio.run(run(build_parser().parse_args())))


if __name__ == "__main__":
    main()
