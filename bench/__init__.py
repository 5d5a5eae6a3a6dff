"""dbpool's benchmark harness: ``python -m bench.run [--quick|--tiny] [--json out.json]``.

Starts the service and raw-driver baseline servers as real processes, drives each with
the same load generator and reports throughput, latency and the service/baseline ratios
(see ``bench/README.md``).
"""
