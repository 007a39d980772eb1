"""Reliability runs: the fault table and the soak (``make chaos``, ``make soak``; results in docs/reliability.md).

- :mod:`.faults` runs open-loop load through a local stack with two copies of every service and, once per row, one
  fault (kill -9 of a service copy, of tritonserver, of redis-server, of nats-server) in the middle of the run;
- :mod:`.soak` runs constant load for a long time and samples each service's memory, file descriptors and errors;
- :mod:`.tally` turns what the producer saw into the numbers of a row (pure);
- :mod:`.report` writes ``loadtests/results/faults.json`` / ``soak.json``, their plots, and the tables in
  ``docs/reliability.md``.
"""
