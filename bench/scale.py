"""Scale: a synthetic ~1B-parameter Llama pair on disk (random, bf16): intruders, delta_rank and a streamed TIES merge,
each against the naive reference, in the same run.

What it measures
  The pair: a Llama of 1.1B parameters (hidden 2048, 16 layers, 32 heads with 8 KV heads, MLP 8192, vocabulary 32000,
  untied head: the geometry of Llama-3.2-1B with a smaller vocabulary), random weights written layer by layer in
  bfloat16 (2.2 GB per model), and a fine-tune = base + a rank-16 update of every block matrix + small dense noise.
  Each phase runs in its own process; its wall time and peak RSS (the process's ru_maxrss) are printed.
  - ftlab: `intruders` (k=10) and `delta_rank` on the two directories (one matrix pair in memory at a time, SVD cache
    in memory only, bounded by its 256 MB default), and `merge(..., 'ties')` writing a directory (tensor by tensor).
  - naive reference: what a script does first: load both models with transformers (float32, 4.4 GB each), then run
    the same ftlab function on the two in-memory models; for the merge, TIES on the in-memory models, then
    `save_pretrained`.
  The memory bound it checks: BOUND_GB (2.5 GB) peak RSS per ftlab phase, independent of the model size (the largest
  matrix pairs in flight, their decompositions and the 256 MB in-memory SVD cache); it prints whether each phase
  stayed under it. The naive reference needs at least both models in float32 (8.8 GB). Exits 0 either way.

Run:  .venv/bin/python bench/scale.py [--layers 16] [--dir /tmp/ftlab-scale] [--keep] [--skip-naive]
"""
from __future__ import annotations
import argparse, json, math, os, shutil, subprocess, sys, time
from pathlib import Path

BOUND_GB = 2.5
GEOMETRY = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                max_position_embeddings=2048, tie_word_embeddings=False)

def shapes_of(layers:int):
    "The config and the block matrices' shapes of the synthetic Llama."
    from transformers import LlamaConfig
    cfg = LlamaConfig(num_hidden_layers=layers, dtype='bfloat16', **GEOMETRY)
    h, m, kv = cfg.hidden_size, cfg.intermediate_size, cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    return cfg, {'self_attn.q_proj': (h, h), 'self_attn.k_proj': (kv, h), 'self_attn.v_proj': (kv, h), 'self_attn.o_proj': (h, h),
              'mlp.gate_proj': (m, h), 'mlp.up_proj': (m, h), 'mlp.down_proj': (h, m)}

def build_size(layers:int) -> int:
    "Parameters of the synthetic Llama (norms left out)."
    cfg, shapes = shapes_of(layers)
    return sum(math.prod(s) for s in shapes.values()) * layers + 2 * cfg.vocab_size * cfg.hidden_size

def build(d:Path, layers:int, seed:int=0) -> int:
    "Write base and fine-tune directories, layer by layer (never a whole model in memory); the number of parameters."
    import torch
    from safetensors.torch import save_file
    cfg, shapes = shapes_of(layers)
    h = cfg.hidden_size
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s, std=0.02: (torch.randn(*s, generator=g) * std)
    index = {'base': {}, 'ft': {}}
    for side in index: (d / side).mkdir(parents=True, exist_ok=True); cfg.save_pretrained(d / side)
    def shard(i, base_t, ft_t):
        for side, t in (('base', base_t), ('ft', ft_t)):
            f = f'model-{i:05d}.safetensors'
            save_file({k: v.to(torch.bfloat16).contiguous() for k, v in t.items()}, d / side / f)
            index[side].update({k: f for k in t})
    outer = {'model.embed_tokens.weight': rnd(cfg.vocab_size, h), 'lm_head.weight': rnd(cfg.vocab_size, h),
             'model.norm.weight': torch.ones(h)}
    shard(0, outer, outer)
    for l in range(layers):
        b, f = {}, {}
        for k, s in shapes.items():
            n = f'model.layers.{l}.{k}.weight'
            b[n] = rnd(*s)
            f[n] = b[n] + rnd(s[0], 16, std=0.05) @ rnd(16, s[1], std=0.05) + rnd(*s, std=0.002)
        for k in ('input_layernorm', 'post_attention_layernorm'):
            n = f'model.layers.{l}.{k}.weight'; b[n] = f[n] = torch.ones(h)
        shard(l + 1, b, f)
    for side in index:
        total = sum((d / side / f).stat().st_size for f in set(index[side].values()))
        (d / side / 'model.safetensors.index.json').write_text(json.dumps(dict(metadata=dict(total_size=total),
                                                                                 weight_map=index[side])))
    return build_size(layers)

PHASES = {
 'intruders': '''
from ftlab.spectral import intruders, SVDCache
r = intruders((B, F), cache=SVDCache(False, max_bytes=CACHE), progress=False, keep_cos=False)
print(f'{len(r.per_matrix)} matrices, {r.count} intruders')''',
 'intruders-naive': '''
from transformers import AutoModelForCausalLM
from ftlab.spectral import intruders, SVDCache
mb, mf = (AutoModelForCausalLM.from_pretrained(x, dtype=torch.float32) for x in (B, F))
r = intruders((mb, mf), cache=SVDCache(False), progress=False, keep_cos=False)
print(f'{len(r.per_matrix)} matrices, {r.count} intruders')''',
 'delta_rank': '''
from ftlab.spectral import delta_rank, SVDCache
r = delta_rank((B, F), cache=SVDCache(False, max_bytes=CACHE), progress=False)
print(f'{len(r)} matrices, median rank_delta {r.rank_delta.median():.0f}')''',
 'delta_rank-naive': '''
from transformers import AutoModelForCausalLM
from ftlab.spectral import delta_rank, SVDCache
mb, mf = (AutoModelForCausalLM.from_pretrained(x, dtype=torch.float32) for x in (B, F))
r = delta_rank((mb, mf), cache=SVDCache(False), progress=False)
print(f'{len(r)} matrices, median rank_delta {r.rank_delta.median():.0f}')''',
 'merge': '''
from ftlab.merge import merge
out = merge(B, [F], 'ties', out=OUT, density=0.2, overwrite=True)
print('wrote', sum(f.stat().st_size for f in out.iterdir()) / 1e9, 'GB')''',
 'merge-naive': '''
from transformers import AutoModelForCausalLM
from ftlab.merge import merge
mb, mf = (AutoModelForCausalLM.from_pretrained(x, dtype=torch.float32) for x in (B, F))
sd = merge(mb, [mf], 'ties', density=0.2)
mb.load_state_dict(sd); mb.to(torch.bfloat16).save_pretrained(OUT)
print('wrote', sum(f.stat().st_size for f in Path(OUT).iterdir()) / 1e9, 'GB')''',
}

def run_phase(name:str, d:Path, threads:int, cache_mb:int=256) -> tuple[float, float, str]:
    "Run one phase in a fresh process: (seconds, peak RSS in GB, its last output line)."
    code = (f'import warnings, torch; warnings.simplefilter("ignore"); torch.set_num_threads({threads})\n'
            f'from pathlib import Path\nB, F, OUT = {str(d / "base")!r}, {str(d / "ft")!r}, {str(d / ("out-" + name))!r}\n'
            f'CACHE = {cache_mb * 2**20}\n'
            + PHASES[name] + '\nimport resource; print("RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)')
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       env=dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS=str(threads)))
    secs = time.perf_counter() - t0
    shutil.rmtree(d / ('out-' + name), ignore_errors=True)
    if r.returncode: return secs, float('nan'), 'failed: ' + (r.stderr.strip().splitlines() or ['?'])[-1]
    lines = r.stdout.strip().splitlines()
    rss = int(lines[-1].split()[1]) / 2**20           # ru_maxrss is in KB on Linux
    return secs, rss, lines[-2] if len(lines) > 1 else ''

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--layers', type=int, default=16); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--dir', default='/tmp/ftlab-scale'); ap.add_argument('--keep', action='store_true')
    ap.add_argument('--skip-naive', action='store_true')
    ap.add_argument('--phases', default='intruders,delta_rank,merge', help='comma-separated: intruders, delta_rank, merge')
    ap.add_argument('--cache-mb', type=int, default=256, help="the ftlab phases' in-memory SVD cache bound (SVDCache's default: 256)")
    ap.add_argument('--reuse', action='store_true', help='use the pair already in --dir (from a run with --keep) if its layers match')
    a = ap.parse_args()
    d = Path(a.dir)
    t0 = time.perf_counter()
    stamp = d / 'layers.txt'
    if a.reuse and stamp.exists() and stamp.read_text() == str(a.layers):
        n = build_size(a.layers); how = 'reused'
    else:
        shutil.rmtree(d, ignore_errors=True)
        n = build(d, a.layers); stamp.write_text(str(a.layers)); how = 'written'
    size = sum(f.stat().st_size for f in (d / 'base').glob('*.safetensors')) / 1e9
    print(f'synthetic Llama pair: {n / 1e9:.2f}B parameters, {size:.2f} GB per model in bf16, {how} in '
          f'{time.perf_counter() - t0:.0f} s ({a.threads} threads)')
    try:
        for phase in a.phases.split(','):
            s, rss, info = run_phase(phase, d, a.threads, a.cache_mb)
            ok = 'within' if rss <= BOUND_GB else 'OVER'
            print(f'{phase:10s} ftlab  {s:7.1f} s  peak RSS {rss:5.2f} GB ({ok} the {BOUND_GB} GB bound)  {info}')
            if a.skip_naive: continue
            s2, rss2, info2 = run_phase(phase + '-naive', d, a.threads)
            print(f'{phase:10s} naive  {s2:7.1f} s  peak RSS {rss2:5.2f} GB  {info2}')
            print(f'{phase:10s} ratio naive / ftlab: time {s2 / s:.2f}x, peak RSS {rss2 / rss:.2f}x')
    finally:
        if not a.keep: shutil.rmtree(d, ignore_errors=True)

if __name__ == '__main__': main()
