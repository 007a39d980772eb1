"""Claim-check store benchmark: a frame stored once, a reference over NATS, the bytes fetched by another process.

Compares the bytes inline in the NATS message, Redis ``SET … PX``, a JetStream stream read by direct get, the NATS
object store and shared memory (a file per frame in ``/dev/shm`` or a ring of slots), for a raw video frame, its
JPEG and a 150 KB tensor; plus delete/expiry cost and the JPEG codec cost (docs/decisions/0006).

Run from the repository root: ``python -m loadtests.claim_check --help``.
"""
