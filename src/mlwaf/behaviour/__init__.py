"""The behavioural layer: per-client request history, its features, and the verdicts drawn from them.

Floods, scanners, bots and credential stuffing look harmless one request at a
time; this package remembers what each client did recently (``tracker``),
describes it with a handful of numbers (``features``) and judges them.
"""
