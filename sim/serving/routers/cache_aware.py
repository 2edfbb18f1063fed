"""`cache_aware`: the replica with the best score, the share of the prompt it holds in its prefix cache
less `cache_balance` × (its outstanding tokens − the mean) / max(1, the mean): the vLLM production
stack's load-aware KV-cache routing (docs.vllm.ai/projects/production-stack, "Load Aware Routing";
its load counts requests in flight, this one tokens), reading each replica's cache as it is (an
ideal index of it, as llm-d and SGLang's router approximate)."""

from __future__ import annotations

from numba import njit

from sim.kernel import prefix
from sim.serving.routers import register
from sim.serving.routers.least_tokens import LeastTokens
from sim.serving.server import Server


@njit(cache=True)
def kernel_pick(f, reps, j, n_in, n_out):  # type: ignore[no-untyped-def]
    """`CacheAware.pick` compiled for job j: the best score (the share of its prompt a replica
    holds cached, less `f.cache_balance` × its load above the mean over the mean), then the least
    loaded, then the first."""
    load = f.load
    mean = load.sum() / load.size
    scale = max(1.0, mean)
    best, best_s, best_w = -1, 0.0, 0
    for k in range(load.size):
        r = reps[k]
        cached = prefix.lookup(r, j, r.n_in[j] + r.generated[j])[0] * r.hb
        s = cached / n_in - f.cache_balance * ((load[k] - mean) / scale)
        if best < 0 or s > best_s or (s == best_s and load[k] < best_w):
            best, best_s, best_w = k, s, load[k]
    return best


@register
class CacheAware(LeastTokens):
    """The most of the prompt cached, weighed against load (see the module docstring); least
    tokens for a request whose job is not known."""

    name = "cache_aware"
    kernel_pick = staticmethod(kernel_pick)

    def pick(self, n_in: int, n_out: int, job: int = -1) -> Server:
        """Score = cached share of the prompt − cache_balance × (load − mean) / max(1, mean);
        the best, then the least loaded, then the first."""
        index = self._index
        if job < 0:
            return index.least()
        index.refresh()
        loads = index.tokens
        mean = sum(loads) / len(loads)
        scale = max(1.0, mean)
        beta = self.fleet.cache_balance
        best, best_s, best_w = 0, 0.0, 0
        for k, (s, w) in enumerate(zip(self.servers, loads, strict=True)):
            score = s.engine.cached_tokens(job) / n_in - beta * ((w - mean) / scale)
            if k == 0 or score > best_s or (score == best_s and w < best_w):
                best, best_s, best_w = k, score, w
        return self.servers[best]
