"""Deterministic cluster simulation of the real ordering core and ledger.

``cluster.Cluster`` runs N nodes (``Core`` + ``Ledger`` + ``MemoryStore``) over
``network.Network`` on a virtual clock, all from one seed; ``faults`` draws
random fault schedules, ``checks`` holds the safety and liveness checkers,
``run.run_seed`` ties them together, and ``python -m emrp2p.sim`` is the CLI.
"""
