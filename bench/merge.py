"""Streaming-merge benchmark: `ftlab.merge.merge` against a plain read-compute-write pass, in the same run.

What it measures
  1. Writes (in a fresh subprocess) a base and `--models` fine-tuned HF Llama model directories of random
     float32 weights, each >= `--gb` GB (default 1.0: hidden 2048, intermediate 5504, vocab 32000, layers as
     needed; the 32000x2048 embedding and lm_head, 250 MiB each, are the largest tensors): config.json
     (LlamaConfig) and ~500 MB safetensors shards with an index, one shard in memory at a time. A fine-tune
     is its base + 0.01·randn, from seeded generators. `--quick` writes a ~0.1 GB model (hidden 512) instead.
  2. Runs each of these in its own fresh subprocess (the parent never imports torch, so each child's
     `ru_maxrss` is its own), after one untimed read of every input file (page cache warm) and `sync`:
     - plain: the pass a script would do: per tensor name, `safe_open(...).get_tensor` from the base and each
       fine-tune, base + Σ (ft − base) in float32, tensors collected per ~500 MB shard and `save_file`d;
     - plain_ties: the same loop computing base + `peft.utils.merge_utils.ties([ft − base ...], ones, 0.2)` per
       tensor: TIES as a script would do it with PEFT (equal weights: PEFT's count mean = ftlab's weight mean);
     - ftlab task_arithmetic: `merge(base, fts, 'task_arithmetic', out=..., overwrite=True)`;
     - ftlab ties: the same with `'ties', density=0.2` (trim='tensor', the default). On CPU this runs ftlab's numba
       kernels; the first use in an install compiles them and caches them on disk. An untimed child does that
       first (its time is printed), so the timed runs measure what every later process pays, numba's import and
       the cache load (~0.4 s) included;
     - mergekit task_arithmetic and ties (same models, dtype float32), only if `import mergekit` works
       (a failing mergekit run is reported and left out).
     Each child imports torch, ftlab and transformers first (not timed: `import s` in the table), then times
     the merge call alone; a thread samples VmRSS / RssAnon / RssFile every 5 ms, and `ru_maxrss` is read
     before and after. Peak increase = peak − RSS after imports. safetensors' get_tensor maps the file, so
     input tensors count as file-backed RSS (page cache, reclaimable) while they live; the plain pass keeps
     its safe_open handles for the whole pass, so its file-backed part grows to all the inputs (the anon
     column is what it allocates). `--repeat` runs the set round-robin that
     many times; the table shows each row's best (lowest) wall time and lowest peak.
  3. Checks that ftlab's task_arithmetic output equals the plain output tensor by tensor (read one tensor
     at a time from both; torch.equal, or max |diff| <= 1e-6), and ftlab's ties output equals plain_ties
     except where the magnitude cut falls between equal |τ| (PEFT's topk picks any of them, ftlab the first:
     at most 1e-5 of the entries may differ).
  Prints a table, the time ratios ftlab/plain (target <= 1.5): task_arithmetic against the plain pass, ties
  against plain_ties (the same computation written plainly) and, for scale, against the plain pass; and the
  peak RSS against the largest tensor and the model size (target: a few tensors, not the model). No assertion
  on timing; exits 1 only if the outputs differ.

Run:  OMP_NUM_THREADS=2 .venv/bin/python bench/merge.py [--gb 1.0] [--models 2] [--repeat 1] [--dir PATH] [--keep] [--quick]
"""
from __future__ import annotations
import argparse, json, math, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

MB = 1e6
SHARD_BYTES = 500 * 10**6          # input shards and the plain pass's output shards
FULL = dict(hidden=2048, inter=5504, vocab=32000, heads=16)
QUICK = dict(hidden=512, inter=1408, vocab=8000, heads=8)
PER_LAYER = ('self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj',
             'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj', 'input_layernorm', 'post_attention_layernorm')

def dims(a) -> dict: return QUICK if a.quick else FULL

def layout(gb: float, d: dict) -> tuple[list[tuple[str, tuple]], int]:
    "LlamaForCausalLM state-dict names and shapes of a model of at least `gb` GB in float32, and its layer count."
    H, I, V = d['hidden'], d['inter'], d['vocab']
    shp = {'self_attn.q_proj': (H, H), 'self_attn.k_proj': (H, H), 'self_attn.v_proj': (H, H), 'self_attn.o_proj': (H, H),
           'mlp.gate_proj': (I, H), 'mlp.up_proj': (I, H), 'mlp.down_proj': (H, I),
           'input_layernorm': (H,), 'post_attention_layernorm': (H,)}
    layer_bytes = 4 * sum(math.prod(s) for s in shp.values())
    L = max(1, math.ceil((gb * 1e9 - 4 * (2 * V * H + H)) / layer_bytes))
    out = [('model.embed_tokens.weight', (V, H))]
    out += [(f'model.layers.{l}.{k}.weight', shp[k]) for l in range(L) for k in PER_LAYER]
    return out + [('model.norm.weight', (H,)), ('lm_head.weight', (V, H))], L

def shard_plan(specs, limit=SHARD_BYTES) -> list[list]:
    "Greedy split of (name, shape) into shards of at most `limit` bytes (float32)."
    shards, cur, size = [], [], 0
    for n, s in specs:
        nb = 4 * math.prod(s)
        if cur and size + nb > limit: shards.append(cur); cur, size = [], 0
        cur.append((n, s)); size += nb
    return shards + [cur]

def shard_names(k: int) -> list[str]: return [f'model-{i:05d}-of-{k:05d}.safetensors' for i in range(1, k + 1)]

# ---- children: each runs in a fresh process and prints one JSON line ----
def make_models(root: Path, a) -> dict:
    "Write base/ and ft{i}/ under `root`: config.json, sharded safetensors, index; one shard per model in memory."
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    d = dims(a)
    specs, L = layout(a.gb, d)
    cfg = LlamaConfig(hidden_size=d['hidden'], intermediate_size=d['inter'], num_hidden_layers=L, vocab_size=d['vocab'],
                      num_attention_heads=d['heads'], num_key_value_heads=d['heads'], max_position_embeddings=2048,
                      tie_word_embeddings=False, torch_dtype='float32', architectures=['LlamaForCausalLM'])
    dirs = [root / 'base'] + [root / f'ft{i}' for i in range(1, a.models + 1)]
    for p in dirs: p.mkdir(parents=True, exist_ok=True); cfg.to_json_file(p / 'config.json')
    gens = [torch.Generator().manual_seed(i) for i in range(len(dirs))]   # base: seed 0, fine-tune i: seed i
    shards = shard_plan(specs); files = shard_names(len(shards))
    for f, sh in zip(files, shards):
        base = {n: torch.randn(s, generator=gens[0]) for n, s in sh}
        save_file(base, str(dirs[0] / f), metadata={'format': 'pt'})
        for p, g in zip(dirs[1:], gens[1:]):
            save_file({n: t + 0.01 * torch.randn(t.shape, generator=g) for n, t in base.items()}, str(p / f),
                      metadata={'format': 'pt'})
        del base
    total = 4 * sum(math.prod(s) for _, s in specs)
    index = json.dumps(dict(metadata=dict(total_size=total), weight_map={n: f for f, sh in zip(files, shards) for n, _ in sh}), indent=2)
    for p in dirs: (p / 'model.safetensors.index.json').write_text(index)
    return dict(total=total, shards=len(shards), layers=L, largest=max(4 * math.prod(s) for _, s in specs), tensors=len(specs))

def plain_pass(base: str, fts: list[str], out: str, ties: bool = False):
    "The reference: per tensor, read base and fine-tunes, base + Σ (ft − base) (or PEFT's TIES of the ft − base) in float32, save_file per ~500 MB shard."
    import torch
    from peft.utils.merge_utils import ties as peft_ties
    from safetensors import safe_open
    from safetensors.torch import save_file
    def handles(d):
        wm = json.loads((Path(d) / 'model.safetensors.index.json').read_text())['weight_map']
        hs = {f: safe_open(str(Path(d) / f), 'pt') for f in sorted(set(wm.values()))}
        return wm, hs
    (bwm, bh), fh = handles(base), [handles(d) for d in fts]
    names = list(bwm)
    specs = [(n, tuple(bh[bwm[n]].get_slice(n).get_shape())) for n in names]
    shards = shard_plan(specs); files = shard_names(len(shards))
    out = Path(out); shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
    for f, sh in zip(files, shards):
        sd = {}
        for n, _ in sh:
            b = bh[bwm[n]].get_tensor(n).float()
            if ties:
                d = [h[wm[n]].get_tensor(n).float() - b for wm, h in fh]
                sd[n] = b + peft_ties(d, torch.ones(len(d)), 0.2)
            else: sd[n] = b + sum(h[wm[n]].get_tensor(n).float() - b for wm, h in fh)
        save_file(sd, str(out / f), metadata={'format': 'pt'})
        del sd
    (out / 'model.safetensors.index.json').write_text(json.dumps(dict(
        metadata=dict(total_size=sum(4 * math.prod(s) for _, s in specs)),
        weight_map={n: f for f, sh in zip(files, shards) for n, _ in sh}), indent=2))

MERGEKIT = {'mk_task_arithmetic': 'task_arithmetic', 'mk_ties': 'ties'}

def mergekit_run(kind: str, base: str, fts: list[str], out: str):
    "mergekit's Python API on the same models (float32, lazy loading, CPU)."
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    method = MERGEKIT[kind]
    p = {'weight': 1.0} | ({'density': 0.2} if method == 'ties' else {})
    cfg = dict(merge_method=method, base_model=base, dtype='float32',
               models=[dict(model=base)] + [dict(model=f, parameters=p) for f in fts])
    opts = dict(cuda=False, copy_tokenizer=False, lazy_unpickle=True, low_cpu_memory=False)
    fields = getattr(MergeOptions, 'model_fields', None) or opts         # keep to the options this version has
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(yaml.safe_dump(cfg))), out,
              options=MergeOptions(**{k: v for k, v in opts.items() if k in fields}))

def rss() -> dict[str, int]:
    "VmRSS, RssAnon, RssFile of this process in bytes."
    with open('/proc/self/status') as f:
        return {l.split(':')[0]: int(l.split()[1]) * 1024 for l in f if l.startswith(('VmRSS', 'RssAnon', 'RssFile'))}

def measure(kind: str, root: Path, a) -> dict:
    "Import everything, then time one merge of kind `kind` while sampling RSS."
    import gc, resource, threading
    t0 = time.perf_counter()
    import torch, transformers, safetensors.torch, peft.utils.merge_utils  # noqa: F401
    from transformers import AutoConfig, LlamaConfig   # noqa: F401 (the import of the config classes is not timed)
    from ftlab.merge import merge
    if kind.startswith('mk_'): import mergekit.merge  # noqa: F401
    imp = time.perf_counter() - t0
    base, fts = str(root / 'base'), [str(root / f'ft{i}') for i in range(1, a.models + 1)]
    out = str(root / f'out_{kind}')
    gc.collect()
    r0, peak, stop = rss(), {'VmRSS': 0}, threading.Event()
    def sample():
        while not stop.is_set():
            r = rss()
            if r['VmRSS'] > peak['VmRSS']: peak.update(r)
            time.sleep(0.005)
    th = threading.Thread(target=sample, daemon=True)
    ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    th.start(); t0 = time.perf_counter()
    if kind == 'plain': plain_pass(base, fts, out)
    elif kind == 'plain_ties': plain_pass(base, fts, out, ties=True)
    elif kind == 'task_arithmetic': merge(base, fts, 'task_arithmetic', out=out, overwrite=True)
    elif kind == 'ties': merge(base, fts, 'ties', out=out, overwrite=True, density=0.2)
    else: mergekit_run(kind, base, fts, out)
    wall = time.perf_counter() - t0
    stop.set(); th.join()
    ru1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pk = max(peak['VmRSS'], ru1)
    return dict(kind=kind, wall=wall, imp=imp, base=r0['VmRSS'], peak=pk, inc=pk - r0['VmRSS'], ru0=ru0, ru1=ru1,
                peak_anon=peak.get('RssAnon', 0), peak_file=peak.get('RssFile', 0), threads=torch.get_num_threads())

def verify(root: Path, a=None, pair=('out_plain', 'out_task_arithmetic')) -> dict:
    "Compare two outputs (out_plain and out_task_arithmetic by default) one tensor at a time."
    import torch
    from safetensors import safe_open
    from ftlab.weights import weight_files
    fa, fb = weight_files(root / pair[0]), weight_files(root / pair[1])
    n_diff = n_all = 0
    if set(fa) != set(fb): return dict(ok=False, why=f'names differ: {sorted(set(fa) ^ set(fb))[:5]}')
    n_equal, worst = 0, 0.0
    for n in fa:
        with safe_open(str(fa[n]), 'pt') as h: x = h.get_tensor(n)
        with safe_open(str(fb[n]), 'pt') as h: y = h.get_tensor(n)
        if x.shape != y.shape or x.dtype != y.dtype: return dict(ok=False, why=f'{n}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}')
        n_all += x.numel()
        if torch.equal(x, y): n_equal += 1
        else: worst = max(worst, float((x - y).abs().max())); n_diff += int((x != y).sum())
        del x, y
    return dict(ok=worst <= 1e-6, tensors=len(fa), equal=n_equal, max_abs_diff=worst, entries_differ=n_diff, entries=n_all)

# ---- parent: stays small (no torch), since fork+exec carries its RSS high-water mark into a child's ru_maxrss ----
def child(a, *args, fatal=True) -> dict|None:
    cmd = [sys.executable, __file__, *args, '--dir', str(a.dir), '--gb', str(a.gb), '--models', str(a.models)] + (['--quick'] if a.quick else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode and not fatal:
        print(f"  child {args} failed ({p.returncode}), left out: {(p.stderr.strip().splitlines() or [''])[-1]}"); return None
    if p.returncode: sys.exit(f'child {args} failed ({p.returncode}):\n{p.stderr[-4000:]}')
    return json.loads(p.stdout.strip().splitlines()[-1])

def warm(root: Path, a):
    "One untimed read of every input file (page cache), then sync so no earlier output is still being written back."
    for d in ['base'] + [f'ft{i}' for i in range(1, a.models + 1)]:
        for f in sorted((root / d).iterdir()):
            with open(f, 'rb') as h:
                while h.read(64 << 20): pass
    os.sync()

def compile_kernels() -> dict:
    "First use of ftlab's TIES kernels in this process: compiles and caches them, or loads the on-disk cache."
    import torch
    from ftlab.merge import ties, _kernels
    t0 = time.perf_counter()
    b = torch.randn(1 << 17); ties(b, [b + 0.01 * torch.randn(1 << 17)], torch.ones(1))
    return dict(wall=time.perf_counter() - t0, numba=_kernels() is not None)

def has_mergekit() -> bool:
    return subprocess.run([sys.executable, '-c', 'import mergekit'], capture_output=True).returncode == 0

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--gb', type=float, default=None, help='size of each model in GB (1e9 bytes); default 1.0 (0.1 with --quick)')
    ap.add_argument('--models', type=int, default=2, help='fine-tuned models merged into the base')
    ap.add_argument('--dir', help='where to write models and outputs (default: a temp dir under /tmp)')
    ap.add_argument('--keep', action='store_true', help='keep the directory afterwards')
    ap.add_argument('--repeat', type=int, default=1, help='measure each this many times, report the best')
    ap.add_argument('--quick', action='store_true', help='a ~0.1 GB model (hidden 512): a smoke test')
    ap.add_argument('--child', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.gb is None: a.gb = 0.1 if a.quick else 1.0
    if a.child:
        root = Path(a.dir)
        res = (make_models(root, a) if a.child == 'make' else compile_kernels() if a.child == 'compile' else verify(root) if a.child == 'verify' else
               verify(root, pair=('out_plain_ties', 'out_ties')) if a.child == 'verify_ties' else measure(a.child, root, a))
        print(json.dumps(res)); return
    made = not a.dir
    a.dir = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix='ftlab-merge-bench-', dir='/tmp'))
    a.dir.mkdir(parents=True, exist_ok=True)
    kinds = ['plain', 'task_arithmetic', 'plain_ties', 'ties']
    mk = has_mergekit()
    if mk: kinds += list(MERGEKIT)
    load0 = os.getloadavg()
    try:
        t0 = time.perf_counter(); info = child(a, '--child', 'make')
        d = dims(a)
        print(f"wrote base + {a.models} fine-tunes of {info['total'] / 1e9:.2f} GB each (float32 Llama, {info['layers']} layers, "
              f"hidden {d['hidden']}, intermediate {d['inter']}, vocab {d['vocab']}; {info['tensors']} tensors in "
              f"{info['shards']} shards) to {a.dir} in {time.perf_counter() - t0:.0f} s", flush=True)
        if not mk: print('mergekit: not importable here, skipped (it is not an ftlab dependency)')
        ck = child(a, '--child', 'compile')
        print(f"ftlab TIES kernels: first use in a fresh process {ck['wall']:.2f} s (numba import; compile and disk cache "
              f"if this install has none)" if ck['numba'] else 'numba not importable: ftlab ties takes the torch path', flush=True)
        res = {k: [] for k in kinds}
        for rep in range(a.repeat):
            for k in kinds:
                warm(a.dir, a)
                r = child(a, '--child', k, fatal=not k.startswith('mk_'))
                if r is None: continue
                res[k].append(r)
                print(f"  run {rep + 1}/{a.repeat} {k:18} {r['wall']:7.2f} s  peak +{r['inc'] / MB:,.0f} MB", flush=True)
                os.sync()
        check = child(a, '--child', 'verify')
        check_ties = child(a, '--child', 'verify_ties')
    finally:
        if not a.keep and made: shutil.rmtree(a.dir, ignore_errors=True)
        elif not a.keep:                       # a --dir of the user's: remove only what this script wrote
            for p in list(a.dir.iterdir()):
                if p.name in ('base', 'out_plain', 'out_plain_ties') or p.name.startswith(('ft', 'out_task_arithmetic', 'out_ties', 'out_mk_')):
                    shutil.rmtree(p, ignore_errors=True)
    load = os.getloadavg()
    best = {k: dict(min(rs, key=lambda r: r['wall']), inc=min(r['inc'] for r in rs), peak=min(r['peak'] for r in rs))
            for k, rs in res.items() if rs}
    ref, model, largest = best['plain'], info['total'], info['largest']
    label = {'plain': 'plain pass (reference)', 'task_arithmetic': 'ftlab task_arithmetic', 'ties': 'ftlab ties d=0.2',
             'plain_ties': 'plain pass, PEFT ties d=0.2',
             'mk_task_arithmetic': 'mergekit task_arithmetic', 'mk_ties': 'mergekit ties d=0.2'}
    print(f"\nmodel {model / MB:,.0f} MB per model, {1 + a.models} input models; largest tensor {largest / MB:,.0f} MB; "
          f"torch threads {ref['threads']}; best of {a.repeat}; load average {load0[0]:.1f} at start, {load[0]:.1f} at end")
    print(f"{'':26}{'wall s':>8}{'/plain':>8}{'import s':>9}{'RSS0 MB':>9}{'peak MB':>9}{'+peak MB':>9}"
          f"{'anon MB':>9}{'file MB':>9}{'×largest':>9}{'×model':>8}")
    for k, r in best.items():
        print(f"{label[k]:26}{r['wall']:8.2f}{r['wall'] / ref['wall']:8.2f}{r['imp']:9.1f}{r['base'] / MB:9,.0f}{r['peak'] / MB:9,.0f}"
              f"{r['inc'] / MB:9,.0f}{r['peak_anon'] / MB:9,.0f}{r['peak_file'] / MB:9,.0f}{r['inc'] / largest:9.2f}{r['inc'] / model:8.2f}")
    print("  (RSS0: after imports; +peak: peak − RSS0; anon/file: split of the sampled peak; ×largest, ×model: +peak over the "
          "largest tensor, one model's size)")
    print(f"\ncorrectness: ftlab task_arithmetic vs plain pass: " +
          (f"{check['equal']}/{check['tensors']} tensors bit-identical, max |diff| {check['max_abs_diff']:.2e} -> "
           f"{'OK' if check['ok'] else 'MISMATCH'}" if 'tensors' in check else f"MISMATCH ({check['why']})"))
    ct = check_ties
    ties_ok = 'tensors' in ct and ct['entries_differ'] <= 1e-5 * ct['entries']
    print(f"correctness: ftlab ties vs plain PEFT ties: " +
          (f"{ct['equal']}/{ct['tensors']} tensors bit-identical, {ct['entries_differ']} of {ct['entries']:,} entries differ "
           f"(equal |τ| at the cut), max |diff| {ct['max_abs_diff']:.2e} -> {'OK' if ties_ok else 'MISMATCH'}"
           if 'tensors' in ct else f"MISMATCH ({ct['why']})"))
    print()
    print(f"{'task_arithmetic':16} time ratio ftlab/plain pass: {best['task_arithmetic']['wall'] / ref['wall']:.2f} (target ≤ 1.5)")
    print(f"{'ties':16} time ratio ftlab/plain PEFT-ties pass: {best['ties']['wall'] / best['plain_ties']['wall']:.2f} (target ≤ 1.5); "
          f"ftlab ties / plain task-arithmetic pass (the I/O floor): {best['ties']['wall'] / ref['wall']:.2f}")
    for k in ('task_arithmetic', 'ties'):
        r = best[k]
        print(f"{k:16} peak RSS: {r['inc'] / MB:,.0f} MB = {r['inc'] / largest:.2f} × largest tensor, {r['inc'] / model:.2f} × model size "
              f"(target: a few tensors, not the model size)")
    print(f"{'plain pass':16} peak RSS: {ref['inc'] / MB:,.0f} MB = {ref['inc'] / largest:.2f} × largest tensor, "
          f"{ref['inc'] / model:.2f} × model size")
    if not (check['ok'] and ties_ok): sys.exit(1)

if __name__ == '__main__': main()
