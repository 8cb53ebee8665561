"""Peak-memory benchmark for `ftlab.weights.open_weights` on a sharded safetensors model.

What it measures
  1. Writes a HF-style sharded model of random fp32 weights (>= `--size-gb`, default 2.2 GB; one
     256 MiB embedding is the largest tensor) to a temp dir under bench/_data/ (or `--dir`),
     shard by shard, so writing it never holds more than one shard in memory.
  2. In a fresh subprocess: imports torch+ftlab, opens `open_weights(dir)` and records the baseline
     RSS, then reads every tensor (`t = w[k]; s += float(t.sum()); del t`) while a thread samples
     VmRSS from /proc/self/status every ~2 ms; `ru_maxrss` (lifetime peak) is read before and after.
  3. In another fresh subprocess, the reference: `safetensors.torch.load_file` of each whole shard.
  Prints the RSS increase over baseline, its ratio to the largest tensor (target: <= 2x), the
  ratio ftlab/naive and the wall times. Exits 0 whether the target holds or not.

Run:  .venv/bin/python bench/weights.py [--size-gb 2.2] [--dir PATH] [--keep]
"""
from __future__ import annotations
import argparse, json, math, shutil, subprocess, sys, tempfile, time
from pathlib import Path

MB = 2**20
HID, KV, INTER, VOCAB = 2048, 512, 5632, 32768  # embedding VOCABxHID fp32 = 256 MiB, the largest tensor
SHARD_BYTES = 10**9                              # HF-style shards of at most ~1 GB

def layout(size_gb: float) -> list[tuple[str, tuple]]:
    "Tensor names and shapes of a llama-like model of at least `size_gb` GB (fp32)."
    per_layer = {'self_attn.q_proj': (HID, HID), 'self_attn.k_proj': (KV, HID), 'self_attn.v_proj': (KV, HID),
                 'self_attn.o_proj': (HID, HID), 'mlp.gate_proj': (INTER, HID), 'mlp.up_proj': (INTER, HID),
                 'mlp.down_proj': (HID, INTER), 'input_layernorm': (HID,), 'post_attention_layernorm': (HID,)}
    layer_bytes = 4 * sum(math.prod(s) for s in per_layer.values())
    n_layers = max(1, math.ceil((size_gb * 1e9 - 4 * VOCAB * HID) / layer_bytes))
    out = [('model.embed_tokens.weight', (VOCAB, HID))]
    out += [(f'model.layers.{l}.{k}.weight', s) for l in range(n_layers) for k, s in per_layer.items()]
    return out + [('model.norm.weight', (HID,))]

def make_model(d: Path, size_gb: float, seed: int = 0):
    "Write the sharded model to `d`, one shard's tensors in memory at a time."
    import torch
    from safetensors.torch import save_file
    shards, cur, cur_bytes = [], [], 0
    for name, shape in layout(size_gb):
        nb = 4 * math.prod(shape)
        if cur and cur_bytes + nb > SHARD_BYTES: shards.append(cur); cur, cur_bytes = [], 0
        cur.append((name, shape)); cur_bytes += nb
    shards.append(cur)
    g, weight_map, total = torch.Generator().manual_seed(seed), {}, 0
    for i, shard in enumerate(shards, 1):
        fn = f'model-{i:05d}-of-{len(shards):05d}.safetensors'
        tensors = {name: torch.randn(shape, generator=g) for name, shape in shard}
        save_file(tensors, str(d / fn), metadata={'format': 'pt'})
        total += sum(t.numel() * 4 for t in tensors.values())
        weight_map.update({name: fn for name in tensors}); del tensors
    (d / 'model.safetensors.index.json').write_text(
        json.dumps({'metadata': {'total_size': total}, 'weight_map': weight_map}, indent=2))
    return total, len(shards)

# ---- child side: runs in a fresh process, prints one JSON line ----
def rss() -> dict[str, int]:
    "VmRSS, RssAnon, RssFile of this process in bytes."
    with open('/proc/self/status') as f:
        return {l.split(':')[0]: int(l.split()[1]) * 1024 for l in f if l.startswith(('VmRSS', 'RssAnon', 'RssFile'))}

def measure(d: str, method: str) -> dict:
    "Baseline and peak RSS while reading every tensor of `d` with `method` ('ftlab' or 'naive')."
    import gc, resource, threading, torch
    from ftlab.weights import open_weights
    from safetensors.torch import load_file
    w = open_weights(d); gc.collect()
    base, peak, stop = rss(), {'VmRSS': 0}, threading.Event()
    def sample():
        while not stop.is_set():
            r = rss()
            if r['VmRSS'] > peak['VmRSS']: peak.update(r)
            time.sleep(0.002)
    th = threading.Thread(target=sample, daemon=True)
    ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    th.start(); t0, s = time.perf_counter(), 0.0
    if method == 'ftlab':
        for k in w: t = w[k]; s += float(t.sum()); del t
    else:
        for f in sorted(set(w._files.values())):
            sd = load_file(str(f))
            for k in sd: s += float(sd[k].sum())
            del sd
    wall = time.perf_counter() - t0
    stop.set(); th.join()
    ru1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(method=method, base=base['VmRSS'], peak=peak['VmRSS'], peak_anon=peak.get('RssAnon', 0),
                peak_file=peak.get('RssFile', 0), ru0=ru0, ru1=ru1, wall=wall, checksum=s, end=rss()['VmRSS'])

def run_child(d: Path, *args) -> dict:
    "Run this script with `args` in a fresh process. The parent stays small (no torch): Linux carries the"
    "parent's RSS high-water mark over fork+exec into the child's ru_maxrss."
    p = subprocess.run([sys.executable, __file__, *args, '--dir', str(d)], capture_output=True, text=True)
    if p.returncode: sys.exit(f'child {args} failed ({p.returncode}):\n{p.stderr}')
    return json.loads(p.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size-gb', type=float, default=2.2, help='model size in GB (1e9 bytes)')
    ap.add_argument('--dir', help='where to write the model (default: a temp dir under bench/_data/)')
    ap.add_argument('--keep', action='store_true', help='keep the model directory afterwards')
    ap.add_argument('--child', choices=['ftlab', 'naive', 'make'], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == 'make': print(json.dumps(make_model(Path(a.dir), a.size_gb))); return
    if a.child: print(json.dumps(measure(a.dir, a.child))); return
    if a.dir: d = Path(a.dir); d.mkdir(parents=True, exist_ok=True)
    else:
        (data := Path(__file__).parent / '_data').mkdir(exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix='weights-', dir=data))
    try:
        t0 = time.perf_counter(); total, n_shards = run_child(d, '--child', 'make', '--size-gb', str(a.size_gb))
        largest = max(4 * math.prod(s) for _, s in layout(a.size_gb))
        print(f'wrote {total / 1e9:.2f} GB in {n_shards} shards to {d} ({time.perf_counter() - t0:.0f} s)', flush=True)
        res = {m: run_child(d, '--child', m) for m in ('ftlab', 'naive')}
    finally:
        if not a.keep: shutil.rmtree(d, ignore_errors=True)
    inc = {m: max(r['peak'], r['ru1']) - r['base'] for m, r in res.items()}
    print(f'\nmodel: {total / MB:,.0f} MiB in {n_shards} shards; largest tensor {largest / MB:,.0f} MiB')
    print(f"{'':27}{'ftlab':>12}{'naive':>12}")
    rows = [('baseline RSS (MiB)', lambda m, r: r['base'] / MB),
            ('peak RSS, sampled (MiB)', lambda m, r: r['peak'] / MB),
            ('  of which anon (MiB)', lambda m, r: r['peak_anon'] / MB),
            ('  of which file (MiB)', lambda m, r: r['peak_file'] / MB),
            ('ru_maxrss before (MiB)', lambda m, r: r['ru0'] / MB),
            ('ru_maxrss after (MiB)', lambda m, r: r['ru1'] / MB),
            ('RSS after loop (MiB)', lambda m, r: r['end'] / MB),
            ('peak increase (MiB)', lambda m, r: inc[m] / MB),
            ('increase / largest', lambda m, r: inc[m] / largest),
            ('wall time (s)', lambda m, r: r['wall'])]
    for label, f in rows: print(f'{label:27}' + ''.join(f'{f(m, r):12,.2f}' for m, r in res.items()))
    if not math.isclose(res['ftlab']['checksum'], res['naive']['checksum'], rel_tol=1e-6):
        print(f"WARNING: checksums differ: {res['ftlab']['checksum']} vs {res['naive']['checksum']}")
    ratio = inc['ftlab'] / largest
    print(f"\nftlab/naive peak increase: {inc['ftlab'] / inc['naive']:.2f}   "
          f"ftlab/naive wall time: {res['ftlab']['wall'] / res['naive']['wall']:.2f}")
    print(f"target increase <= 2x largest tensor: {'PASS' if ratio <= 2 else 'FAIL'} ({ratio:.2f}x)")

if __name__ == '__main__': main()
