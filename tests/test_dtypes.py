"""Every pillar on a bfloat16 checkpoint pair (as pretrained models ship) against the same pair in float32, on CPU
with `device='cpu'` given explicitly (the same argument puts the work on 'cuda' where there is one)."""
import copy, json, warnings
from pathlib import Path
import pytest, torch

from ftlab.sources import load
from ftlab.evaluate import evaluate

@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
    "{'float32': (base dir, fine-tune dir), 'bfloat16': (...)}: the zoo base and a perturbed copy, saved in each dtype."
    root = tmp_path_factory.mktemp('dtypes')
    base, tok = load('llama')
    ft = copy.deepcopy(base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in ft.named_parameters():   # a low-rank update of every block matrix, well above bf16 rounding
            if p.ndim == 2 and 'layers' in n:
                p.add_(0.3 * p.std() * torch.randn(p.shape[0], 2, generator=g) @ torch.randn(2, p.shape[1], generator=g) / 2)
    out = {}
    for dt in ('float32', 'bfloat16'):
        for m, name in ((base, 'base'), (ft, 'ft')):
            m2 = copy.deepcopy(m).to(getattr(torch, dt)); m2.config.dtype = getattr(torch, dt)
            m2.save_pretrained(root / dt / name); tok.save_pretrained(root / dt / name)
        out[dt] = (str(root / dt / 'base'), str(root / dt / 'ft'))
    return out

def test_load_keeps_or_converts_the_dtype(pairs):
    b16 = pairs['bfloat16'][0]
    assert next(load(b16)[0].parameters()).dtype == torch.float32            # ftlab's default: float32
    assert next(load(b16, dtype='auto')[0].parameters()).dtype == torch.bfloat16
    assert next(load(b16, dtype='bf16', device='cpu')[0].parameters()).dtype == torch.bfloat16

def test_evaluate_in_bf16(pairs):
    accs = {dt: float(evaluate(*load(pairs[dt][1], dtype='auto'), 'copy', n=64).summary.accuracy.iloc[0]) for dt in pairs}
    assert abs(accs['bfloat16'] - accs['float32']) <= 0.1, accs

def test_spectral_on_bf16(pairs):
    from ftlab.spectral import intruders, delta_rank, spectral_stats
    from ftlab.weights import open_weights
    r = {dt: intruders(pairs[dt], cache=False, progress=False, device='cpu') for dt in pairs}
    a, b = (r[dt].table.sort_values(['name', 'j']).reset_index(drop=True) for dt in ('float32', 'bfloat16'))
    assert (a.s - b.s).abs().max() < 0.02 and (a.sigma - b.sigma).abs().max() / a.sigma.max() < 0.02
    d = {dt: delta_rank(pairs[dt], cache=False, progress=False, device='cpu') for dt in pairs}
    assert (d['float32'].rank_base - d['bfloat16'].rank_base).abs().max() <= 2
    assert (d['bfloat16'].rounding > 0).all() and (d['float32'].rounding == 0).all()   # bf16 storage noise is estimated
    s = {dt: spectral_stats(open_weights(pairs[dt][1]), cache=False, progress=False, device='cpu') for dt in pairs}
    assert ((s['float32'].fro - s['bfloat16'].fro).abs() / s['float32'].fro).max() < 0.01

def test_merge_bf16_writes_bf16_and_says_so(pairs, tmp_path):
    from ftlab.merge import merge
    b, f = pairs['bfloat16']
    out = merge(b, [f], 'ties', out=tmp_path / 'm16', density=0.5)
    assert json.loads((out / 'config.json').read_text())['dtype'] == 'bfloat16'
    m, _ = load(str(out), dtype='auto')
    assert next(m.parameters()).dtype == torch.bfloat16
    out32 = merge(b, [f], 'ties', out=tmp_path / 'm32', density=0.5, dtype='float32')
    assert json.loads((out32 / 'config.json').read_text())['dtype'] == 'float32'

def test_graft_on_bf16(pairs):
    from ftlab.localize import graft
    m = {dt: graft(pairs[dt], 'copy', sparsity=1e-3, steps=2, n_train=32, n_val=32, progress=False, device='cpu', dtype='auto')
         for dt in pairs}
    assert m['bfloat16'].count > 0 and all(v.device.type == 'cpu' for v in m['bfloat16'].values())
    assert m['bfloat16'].base_patch.overlap(m['float32'].base_patch, 'jaccard') > 0.8   # the same largest |τ| entries

def test_patching_on_bf16(pairs):
    from ftlab.patching import act_patch, query_pairs
    clean, corrupt = query_pairs('kv', 8)
    r = {dt: act_patch(*load(pairs[dt][0], dtype='auto'), clean, corrupt, component='resid_pre') for dt in pairs}
    assert (r['float32'].score - r['bfloat16'].score).abs().max() < 0.15, r
    assert r['float32'].score.abs().max() > 0.5   # patching has an effect to compare

def test_finetune_mixed_precision_bf16(tmp_path):
    from ftlab.train import finetune
    run = finetune('llama', 'sort', 'lora', tmp_path / 'run', steps=10, eval_every=10, n_eval=16, n_train=256, batch_size=4,
                   seq_len=64, mixed_precision='bf16', device='cpu', progress=False, forget_tasks=())
    log = run.log
    assert run.config.mixed_precision == 'bf16' and log.loss.notna().all() and bool((log.loss < 20).all())
    assert run.metrics.task_loss.iloc[-1] < run.metrics.task_loss.iloc[0]
