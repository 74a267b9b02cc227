"""Concurrent requests: every one is answered."""
from concurrent.futures import ThreadPoolExecutor

from harness.types import GenerationRequest


def test_concurrent_requests_all_succeed(target, profile, recorder):
    n = profile.get("concurrency", 2)
    requests = [GenerationRequest(f"a kite number {i}", height=64, width=64, num_inference_steps=2, seed=i)
                for i in range(2 * n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(target.generate, requests))
    ok = sum(r.images.shape == (1, 64, 64, 3) for r in results)
    recorder.metric("success_rate", ok / len(requests), better="higher")
    recorder.note(f"{n} threads sharing one {target.name} target in this process")
    assert ok == len(requests)
