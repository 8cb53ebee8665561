"""delta_rank against intruders on a real pretrained pair (SmolLM2-135M-Instruct), in the same run.

What it measures
  The base is SmolLM2-135M-Instruct (`ftlab.sources.smollm2()`, built once by `make smollm2`). The fine-tunes are
  short runs on it (`--steps` steps on `--task`, written to a temporary directory): LoRA, read as base + adapter
  (delta_rank takes ΔW's spectrum from the adapter's factors), and full fine-tuning (dense ΔW). `--method` picks one.
  Both analyses go over the same 210 block matrices, each with a fresh disk cache (cold), then again with the
  cache the first pass filled (warm):
  - `intruders` (k=10, ε=0.5): the base's top singular vectors (cached) and the fine-tune's certified top-k.
  - `delta_rank` (energy 0.9): the full spectrum of every ΔW and the base's singular values (both cached by content).
  - `spectral_stats` of the fine-tuned weights: every matrix's singular values (cached).
  Prints the times and the ratios delta_rank / intruders and spectral_stats / intruders (the issue's target: ≤ 1,
  no slower than intruders).
  Exits 0 either way.

Run:  make smollm2 && .venv/bin/python bench/real_spectral.py [--method lora|full|both] [--steps 4] [--threads 2]
"""
from __future__ import annotations
import argparse, os, tempfile, time

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--task', default='copy'); ap.add_argument('--steps', type=int, default=4)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--method', default='both', choices=('lora', 'full', 'both'))
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from ftlab.sources import smollm2
    from ftlab.train import finetune
    from ftlab.spectral import intruders, delta_rank, spectral_stats, SVDCache
    base = smollm2()
    for method in (('lora', 'full') if a.method == 'both' else (a.method,)):
      with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run = finetune(str(base), a.task, method, os.path.join(d, 'run'), steps=a.steps, eval_every=0, n_eval=8, n_train=64,
                       batch_size=4, seq_len=64, progress=False, threads=a.threads, forget_tasks=())
        print(f'{method} fine-tune of {base.name}: {a.steps} steps on {a.task} in {time.perf_counter() - t0:.1f} s')
        pair = (str(base), run)
        caches = {side: os.path.join(d, f'svd-{side}') for side in ('intruders', 'delta_rank', 'stats')}
        for label in ('cold', 'warm'):
            t0 = time.perf_counter(); r = intruders(pair, cache=SVDCache(caches['intruders']), progress=False)
            ti = time.perf_counter() - t0
            t0 = time.perf_counter(); dr = delta_rank(pair, cache=SVDCache(caches['delta_rank']), progress=False)
            td = time.perf_counter() - t0
            t0 = time.perf_counter(); st = spectral_stats(run.weights(), cache=SVDCache(caches['stats']), progress=False)
            ts = time.perf_counter() - t0
            print(f'{method} {label}: intruders {ti:6.2f} s ({len(r.per_matrix)} matrices, {r.count} intruders)   '
                  f'delta_rank {td:6.2f} s ({len(dr)} matrices, median rank_delta {dr.rank_delta.median():.0f})   '
                  f'spectral_stats {ts:6.2f} s ({len(st)} matrices)   '
                  f'ratios to intruders: delta_rank {td / ti:.2f}, spectral_stats {ts / ti:.2f} (target <= 1)')

if __name__ == '__main__': main()
