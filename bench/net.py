"""What one message costs in the network layer: two processes, one small frame each way at a time.

    python bench/net.py [--round-trips 3000] [--size 200]

Two ``emrp2p.net.Network`` nodes (real libp2p: TCP, Noise, Yamux, our framing) run in two
processes on 127.0.0.1, both started by this script. One sends a frame of ``--size``
bytes to the other, which sends it back; the next goes once the answer is in.
After a warm-up it prints the round trip (median and mean) and the CPU per round trip of
each process (utime + stime, all threads): a round trip is one message sent and one
received by each side. Consensus traffic between hospitals is a few messages per block
(a proposal, votes, a commit notice, forwarded transactions), so this is the network's
share of every block. The last line is ``net_cpu_us_per_round_trip=<mean of the two>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARM_UP = 200


def node(role: str, port_a: int, port_b: int, round_trips: int, size: int) -> None:
    import trio

    from emrp2p.crypto import Identity
    from emrp2p.logs import configure_logging

    configure_logging(json=True, level="warning")
    from emrp2p.net import Network, peer_id_of

    ids = [Identity.from_test_name(f"bench-net-{i}") for i in range(2)]
    keys = [i.public for i in ids]
    me = 0 if role == "a" else 1
    other = ids[1 - me].public
    dial = {ids[0].public: f"/ip4/127.0.0.1/tcp/{port_a}/p2p/{peer_id_of(ids[0].public)}"} if me else {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            net = Network(ids[me], ("127.0.0.1", (port_a, port_b)[me]), keys, dial, gossip=False)
            await nursery.start(net.run)
            print("listening", flush=True)  # the echo side listens before the sender dials
            with trio.fail_after(30):
                await net.wait_connected(other)
            if me == 0:  # the echo side
                with trio.fail_after(600):
                    for i in range(WARM_UP + round_trips):
                        if i == WARM_UP:
                            c0 = time.process_time()
                        _, payload = await net.incoming.receive()
                        net.send(other, payload)
                    cpu = time.process_time() - c0
                print(json.dumps({"cpu": cpu}), flush=True)
                await trio.sleep(0.2)  # the last answer goes out
            else:
                payload = os.urandom(size)
                with trio.fail_after(60):
                    for _ in range(WARM_UP):
                        net.send(other, payload)
                        await net.incoming.receive()
                times = []
                c0 = time.process_time()
                with trio.fail_after(600):
                    for _ in range(round_trips):
                        t = time.perf_counter()
                        net.send(other, payload)
                        await net.incoming.receive()
                        times.append(time.perf_counter() - t)
                cpu = time.process_time() - c0
                print(json.dumps({"times": times, "cpu": cpu}), flush=True)
            nursery.cancel_scope.cancel()

    trio.run(main)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--round-trips", type=int, default=3000)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--role", choices=["a", "b"], help=argparse.SUPPRESS)
    p.add_argument("--ports", help=argparse.SUPPRESS)
    a = p.parse_args()
    if not 1 <= a.round_trips <= 100_000 or not 1 <= a.size <= 1 << 20:
        p.error("--round-trips 1..100000, --size 1..1048576")
    if a.role:
        port_a, port_b = map(int, a.ports.split(","))
        node(a.role, port_a, port_b, a.round_trips, a.size)
        return 0
    from emrp2p.cli.testnet import free_ports

    ports = ",".join(map(str, free_ports(2)))
    common = [
        sys.executable,
        __file__,
        "--round-trips",
        str(a.round_trips),
        "--size",
        str(a.size),
        "--ports",
        ports,
    ]
    procs = [subprocess.Popen([*common, "--role", "a"], stdout=subprocess.PIPE, text=True)]
    try:
        assert procs[0].stdout is not None
        if procs[0].stdout.readline().strip() != "listening":
            raise SystemExit("the echo process did not start")
        procs.append(subprocess.Popen([*common, "--role", "b"], stdout=subprocess.PIPE, text=True))
        echo, sender = (json.loads(p.communicate(timeout=900)[0].strip().splitlines()[-1]) for p in procs)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    times = sorted(sender["times"])
    n = len(times)
    us = 1e6
    cpu = [sender["cpu"] / n * us, echo["cpu"] / n * us]
    print(f"{n} round trips of {a.size} B each way, one at a time, two processes on 127.0.0.1")
    print(f"round trip: median {statistics.median(times) * us:.0f} us, mean {sum(times) / n * us:.0f} us")
    print(
        f"CPU per round trip (one message sent and one received): sender {cpu[0]:.0f} us, echo {cpu[1]:.0f} us"
    )
    print(f"net_cpu_us_per_round_trip={sum(cpu) / 2:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
