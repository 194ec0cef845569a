"""KServe's pod injectors, one module each, applied by `webhooks.pod_mutator` in KServe's order.

Each injector edits a checked pod dict in place (the mutator deep-copies first) and is idempotent, so the
webhook can run with `reinvocationPolicy: IfNeeded`.
"""
