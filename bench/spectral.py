"""Intruder-analysis benchmark: `ftlab.spectral.intruders` against the naive reference, in the same run.

What it measures
  A study of several fine-tunes of one base, made by the script from seeded random numbers: a base of
  `--layers` LLaMA-style blocks with q, o (d×d), up (4d×d) and down (d×4d) matrices, d = `--d` (≥ 512), and
  `--fts` fine-tunes of it: half with low-rank updates (ranks 1, 4, 8, 16, ...: LoRA-like), half with
  full-rank Gaussian updates (full-fine-tuning-like), of relative size ‖ΔW‖F/‖W0‖F 0.3–0.6 (low rank) and 0.05–0.2 (full rank).
  - reference: the paper's computation as people script it: for every fine-tune and every matrix, a full
    float32 SVD of W0 and of Wt (`torch.linalg.svd`, thin), M = |Utᵀ U0|, s_j = max_i M[j, i] for j ≤ k.
  - ftlab: `intruders(pair)` for each fine-tune with one `SVDCache` (cold at the start: the base is
    decomposed during the first fine-tune) and the certified top-k path for the fine-tuned matrices.
    Also timed with the cache warm (the same study run again, e.g. after a notebook restart).
  Both run in fresh subprocesses so that each peak RSS (ru_maxrss) is its own, in the caller's environment
  (`intruders` analyses two matrices at once on two threads unless OMP_WAIT_POLICY=ACTIVE, under which idle
  OpenMP threads spin and it runs one at a time). `--active-reference` runs the reference with
  OMP_WAIT_POLICY=ACTIVE (faster for it in some runs here), and ftlab in the caller's environment. The script checks that the
  intruder counts of every (fine-tune, matrix) are identical, and prints wall time and peak RSS of each and
  the ratios (target in the issue: >= 10x faster).

  The base spectrum matters. `--spectrum power` (default) gives singular values decaying as i^-0.5, like
  trained weight matrices (whose spectra are heavy-tailed); `--spectrum gauss` is an i.i.d. Gaussian
  matrix, whose top singular values crowd together at the edge of the bulk (gaps of about 1%). There the
  float32 Gram matrix cannot resolve the top-k vectors: ftlab refines them in float64 or falls back to the
  full SVD; the bench prints the share it certified (the README gives a run's figures).

  With `--repeat N` each side runs N times (each in a fresh process) and the best times are compared; the
  range of the N runs is printed too (this machine's timings vary by up to 30% from run to run), and so is
  the median of the paired ratios (each repeat runs the reference and then ftlab back to back).

Run:  .venv/bin/python bench/spectral.py [--d 512] [--layers 2] [--fts 8] [--spectrum power|gauss] [--threads 2] [--repeat 1] [--active-reference] [--workers N]
"""
from __future__ import annotations
import argparse, json, os, resource, statistics, subprocess, sys, time

KINDS = {'self_attn.q_proj': (1, 1), 'self_attn.o_proj': (1, 1), 'mlp.up_proj': (4, 1), 'mlp.down_proj': (1, 4)}

def make_study(d:int, layers:int, fts:int, spectrum:str):
    "(base dict, [fine-tune dicts], labels): seeded, LLaMA parameter names."
    import torch
    g = torch.Generator().manual_seed(0)
    base = {}
    for l in range(layers):
        for kind, (a, b) in KINDS.items():
            m, n = a * d, b * d
            if spectrum == 'gauss': W = torch.randn(m, n, generator=g) / n ** 0.5
            else:
                r = min(m, n)
                U = torch.linalg.qr(torch.randn(m, r, generator=g)).Q; V = torch.linalg.qr(torch.randn(n, r, generator=g)).Q
                W = (U * torch.arange(1, r + 1) ** -0.5) @ V.T
            base[f'model.layers.{l}.{kind}.weight'] = W.contiguous()
    out, labels = [], []
    for i in range(fts):
        low = i < fts // 2
        rank, size = (4 ** i, 0.3 + 0.1 * i) if low else (None, 0.05 + 0.05 * (i - fts // 2))
        ft = {}
        for name, W in base.items():
            m, n = W.shape
            dW = torch.randn(m, min(rank, m), generator=g) @ torch.randn(min(rank, m), n, generator=g) if low else torch.randn(m, n, generator=g)
            ft[name] = W + size * W.norm() / dW.norm() * dW
        out.append(ft); labels.append(f'lowrank r={min(rank, d)} ({size:.2f})' if low else f'fullrank ({size:.2f})')
    return base, out, labels

def part(which:str, args) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    from ftlab.spectral import intruders, intruders_reference, SVDCache, base_svd
    from ftlab.weights import ModelPair
    base, fts, labels = make_study(args.d, args.layers, args.fts, args.spectrum)
    # one-time library initialisation (MKL's first eigh/SVD/QR calls take milliseconds) is left out of both sides
    W = torch.randn(64, 64, dtype=torch.float64); G = W @ W.T
    for x in (W, W.float()): torch.linalg.svd(x); torch.linalg.qr(x)
    for x in (G, G.float()): torch.linalg.eigh(x)
    counts, t0 = {}, time.perf_counter()
    if which == 'reference':
        for lab, ft in zip(labels, fts):
            for n in base: counts[f'{lab}|{n}'] = intruders_reference(base[n], ft[n], args.k, args.eps)[1]
        extra = {}
    else:
        cache = SVDCache(False)
        hows = []
        for lab, ft in zip(labels, fts):
            p = ModelPair(base, ft); p.config = 'llama'
            pm = intruders(p, args.k, args.eps, cache=cache, keep_cos=False, progress=False, workers=args.workers).per_matrix
            counts.update({f'{lab}|{m.name}': m.intruders for m in pm.itertuples()})
            hows += pm.how.tolist()
        cold = time.perf_counter() - t0
        t1 = time.perf_counter()
        for lab, ft in zip(labels, fts):
            p = ModelPair(base, ft); p.config = 'llama'
            intruders(p, args.k, args.eps, cache=cache, keep_cos=False, progress=False, workers=args.workers).per_matrix   # the counts, as above
        warm, t2 = time.perf_counter() - t1, time.perf_counter()
        for W in base.values(): base_svd(W)                     # the part of the cold run a warm cache saves
        from ftlab.spectral import _auto_workers
        extra = dict(workers=args.workers or _auto_workers(), warm_seconds=warm, cold_seconds=cold, base_seconds=time.perf_counter() - t2,
                     topk_share=sum(h == 'topk' for h in hows) / len(hows))
    secs = extra.pop('cold_seconds', time.perf_counter() - t0)
    return dict(seconds=secs, counts=counts, rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--d', type=int, default=512); ap.add_argument('--layers', type=int, default=2)
    ap.add_argument('--fts', type=int, default=8); ap.add_argument('--k', type=int, default=10)
    ap.add_argument('--eps', type=float, default=0.5); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--spectrum', choices=['power', 'gauss'], default='power')
    ap.add_argument('--repeat', type=int, default=1, help='runs per side; the best times are compared')
    ap.add_argument('--active-reference', action='store_true', help='run the reference with OMP_WAIT_POLICY=ACTIVE')
    ap.add_argument('--workers', type=int, help="ftlab's matrices at a time (default: intruders' own choice)")
    ap.add_argument('--part', choices=['reference', 'ftlab'], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.d < 512: sys.exit('--d must be at least 512 (the issue asks for matrices of at least 512×512).')
    if args.part:
        print(json.dumps(part(args.part, args))); return
    res, runs = {}, {}
    for i in range(args.repeat):
        for which in ('reference', 'ftlab'):               # alternate, so slow phases of the machine hit both
            cmd = [sys.executable, __file__, '--part', which] + [f'--{k}={v}' for k, v in vars(args).items()
                                                                 if k not in ('part', 'repeat', 'active_reference') and v is not None]
            env = dict(os.environ, OMP_WAIT_POLICY='ACTIVE') if which == 'reference' and args.active_reference else None
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            runs.setdefault(which, []).append(r)
            if which not in res: res[which] = dict(r)
            else:
                b = res[which]
                if r['counts'] != b['counts']: sys.exit(f'{which}: counts differ between repeats')
                for key in ('seconds', 'warm_seconds', 'base_seconds'):
                    if key in r: b[key] = min(b[key], r[key])
                b['rss_mb'] = max(b['rss_mb'], r['rss_mb'])   # peak RSS: the largest of the runs
    ref, ft = res['reference'], res['ftlab']
    same = ref['counts'] == ft['counts']
    n_mat = len(ref['counts'])
    print(f'study: {args.fts} fine-tunes × {n_mat // args.fts} matrices (d={args.d}, up to {4 * args.d}×{args.d}), '
          f'{args.spectrum} base spectrum, k={args.k}, eps={args.eps}, {args.threads} threads; OMP_WAIT_POLICY: '
          f'{"ACTIVE" if args.active_reference else os.environ.get("OMP_WAIT_POLICY") or "unset"} (reference), '
          f'{os.environ.get("OMP_WAIT_POLICY") or "unset"} (ftlab: {ft["workers"]} worker thread(s))')
    print(f'intruders found: {sum(ref["counts"].values())} (reference) vs {sum(ft["counts"].values())} (ftlab); '
          f'per-matrix counts identical: {same}')
    print(f'reference: {ref["seconds"]:.2f} s, peak RSS {ref["rss_mb"]:.0f} MB')
    print(f'ftlab    : {ft["seconds"]:.2f} s cold cache, {ft["warm_seconds"]:.2f} s warm; peak RSS {ft["rss_mb"]:.0f} MB; '
          f'certified top-k used for {ft["topk_share"]:.0%} of fine-tuned matrices (the rest: full SVD)')
    print(f'ftlab cold run = decomposing the {n_mat // args.fts} base matrices ({ft["base_seconds"]:.2f} s, timed alone, '
          f'one after another) + the fine-tuned matrices ({1000 * ft["warm_seconds"] / n_mat:.1f} ms each, the warm run\'s '
          f'wall time per matrix){" on " + str(ft["workers"]) + " worker threads, which overlap the two" if ft["workers"] > 1 else ""}')
    print(f'speed-up: {ref["seconds"] / ft["seconds"]:.1f}x cold, {ref["seconds"] / ft["warm_seconds"]:.1f}x warm '
          f'(target >= 10x); peak RSS ratio ftlab/reference {ft["rss_mb"] / ref["rss_mb"]:.2f}')
    if args.repeat > 1:
        rng = lambda which, key: f'{min(x[key] for x in runs[which]):.2f}–{max(x[key] for x in runs[which]):.2f} s'
        print(f'best of {args.repeat} runs each; ranges: reference {rng("reference", "seconds")}, '
              f'ftlab cold {rng("ftlab", "seconds")}, warm {rng("ftlab", "warm_seconds")}')
        # each repeat runs the reference and then ftlab back to back: their ratio is the least sensitive to the
        # machine's slow and fast phases (which moved the reference by 25% between repeats here)
        for key, what in (('seconds', 'cold'), ('warm_seconds', 'warm')):
            q = sorted(r['seconds'] / f[key] for r, f in zip(runs['reference'], runs['ftlab']))
            print(f'paired speed-up ({what}, reference / ftlab within each repeat): median {statistics.median(q):.1f}x, '
                  f'range {q[0]:.1f}–{q[-1]:.1f}x')
    if not same: sys.exit('counts differ')

if __name__ == '__main__': main()
