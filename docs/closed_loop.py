"""TTFT and TPOT per concurrency of a closed-loop replay of a fixed-length serving benchmark.

    python docs/closed_loop.py [--oracle llama-3.1-8b_h100] [--n-in 1024] [--n-out 128]
                               [--concurrency 1,2,4,8,16,32,64] [--per-client 8] [--think-s 0]
                               [--scheduler vllm]

At each concurrency C, C clients send `--per-client` requests each (C × per-client in all,
`trace=closed_loop`), one server with the oracle and the scheduler; the Markdown table gives the
throughput (completed requests and output tokens per simulated second), median and p99 TTFT and
TPOT, and the energy per output token, idle included. The same runs from the command line, one
MLflow run per concurrency: python -m sim -m trace=closed_loop trace.concurrency=1,2,4,8,16,32,64 …
"""

from __future__ import annotations

import argparse

import traces
from oracle.model import Oracle
from sim.config import ServerConfig, SloConfig
from sim.results.metrics import run_summary
from sim.serving.run import simulate

HEADER = (
    "| concurrency | requests | requests/s | output tokens/s | TTFT p50 (s) | TTFT p99 (s) "
    "| TPOT p50 (ms) | TPOT p99 (ms) | J / output token |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def row(oracle: Oracle, server: ServerConfig, clients: int, args: argparse.Namespace) -> str:
    """The table's row for `clients` clients."""
    requests = traces.load(
        "closed_loop", concurrency=clients, num_requests=clients * args.per_client, n_in=args.n_in,
        n_out=args.n_out, think_s=args.think_s,
    )  # fmt: skip
    s = run_summary(simulate(requests, oracle, server), SloConfig())
    return (
        f"| {clients} | {s.completed} | {s.completed / s.makespan_s:.2f} | {s.output_tokens / s.makespan_s:.0f} "
        f"| {s.ttft_s.p50:.3f} | {s.ttft_s.p99:.3f} | {1e3 * s.tpot_s.p50:.2f} | {1e3 * s.tpot_s.p99:.2f} "
        f"| {s.energy_per_output_token_j:.4f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", default="llama-3.1-8b_h100")
    parser.add_argument("--n-in", type=int, default=1024, help="prompt tokens of every request")
    parser.add_argument("--n-out", type=int, default=128, help="output tokens of every request")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32,64", help="comma-separated client counts")
    parser.add_argument("--per-client", type=int, default=8, help="requests each client sends")
    parser.add_argument("--think-s", type=float, default=0.0, help="s a client waits between requests")
    parser.add_argument("--scheduler", default="vllm")
    args = parser.parse_args(argv)
    oracle, server = Oracle.load(args.oracle), ServerConfig(scheduler=args.scheduler)
    print(f"{args.oracle}, {args.scheduler}: n_in={args.n_in}, n_out={args.n_out}, think {args.think_s:g} s\n")
    print(HEADER)
    for clients in (int(c) for c in args.concurrency.split(",")):
        print(row(oracle, server, clients, args), flush=True)


if __name__ == "__main__":
    main()
