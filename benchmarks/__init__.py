"""Reproducible benchmarks of natspull against nats-py and nats.js: ``python -m benchmarks [--quick]``.

Layout::

    __main__.py     command line: start a server, run the cases interleaved, print, write JSON
    _registry.py    Sample, Case, the @case and target() registries, the list of case modules
    _env.py         the shared environment (server, filled streams, temporary consumers)
                    and helpers (an asyncio loop thread, watchdogs, RSS, percentiles)
    _report.py      aggregation (median, min-max, ratios), the table, the targets, the JSON
    throughput.py   1 iterator + ack, 2 iterator without acks, 4 nats-py fetch, 5 naive thread
                    wrapper, 10 core-subscription ceiling
    consume.py      3 consume(workers=8), 3b worker scaling, 9 memory with a slow consumer
    latency.py      6 publish -> receive latency, 7 drain()/stop() wake-up latency
    publish.py      8 publish_many against nats-py publish_async, 8b publish_async from 8
                    threads, 8s one publish() at a time
    workers.py      12 natspull worker: a CPU-bound handler in 1 and 2 processes
    js_case.py      1js, 2js, 8js: nats.js (node) beside cases 1, 2 and 8; installs nats.js
                    with npm into .js/ on first use, runs js/bench.mjs per row

Adding a case: write a function ``(env: Env) -> list[Sample]`` in a module, decorate it with
``@case("11", "my_case", "what it measures")`` and add the module's name to
``_registry.CASE_MODULES``. See ``benchmarks/README.md``.
"""
