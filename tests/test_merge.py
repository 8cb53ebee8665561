"Merge pillar: agreement with peft.utils.merge_utils on two families, streamed output, untouched inputs, the CLI."
import copy, hashlib, json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from peft.utils import merge_utils as mu
from ftlab.merge import merge, tensor_seed, read_mergekit, MergeError, METHODS
from ftlab.weights import open_weights
from ftlab.zoo import tiny_model

FTLAB = Path(sys.executable).parent / 'ftlab'

def _ft(m0, seed, scale=0.02, frac=1.0):
    "A copy of `m0` whose float weights moved by N(0, scale²) on a random `frac` of entries."
    g, m = torch.Generator().manual_seed(seed), copy.deepcopy(m0)
    with torch.no_grad():
        for p in m.parameters():
            d = torch.randn(p.shape, generator=g) * scale
            if frac < 1: d *= (torch.rand(p.shape, generator=g) < frac)
            p.add_(d)
    return m

@pytest.fixture(scope='module', params=['llama', 'gpt2'])
def fam(request):
    m0, tok = tiny_model(request.param)
    return request.param, m0, tok, [_ft(m0, 1), _ft(m0, 2, 0.05, 0.5), _ft(m0, 3, 0.01)]

@pytest.mark.parametrize('density', [0.1, 0.5])
def test_agrees_with_peft_merge_utils(fam, density):
    "ftlab with PEFT's conventions equals peft.utils.merge_utils on every tensor (DARE: the same Bernoulli stream)."
    _, m0, _, ms = fam
    w = torch.tensor([0.5, 1.5, -0.3])        # a negative weight too
    seed = 7
    ours = dict(task_arithmetic=merge(m0, ms, 'task_arithmetic', w),
                magnitude_prune=merge(m0, ms, 'magnitude_prune', w, density=density),
                ties=merge(m0, ms, 'ties', w, density=density, sign_weighted=False, normalize='count'),
                ties_frequency=merge(m0, ms, 'ties', w, density=density, sign_weighted=False, normalize='count', consensus='count'),
                dare_linear=merge(m0, ms, 'dare_linear', w, density=density, seed=seed),
                dare_ties=merge(m0, ms, 'dare_ties', w, density=density, seed=seed, sign_weighted=False, normalize='count'))
    s0, ss = m0.state_dict(), [m.state_dict() for m in ms]
    checked = 0
    for k in ours['ties']:
        tv = [s[k].float() - s0[k].float() for s in ss]
        ref = dict(task_arithmetic=mu.task_arithmetic(tv, w), magnitude_prune=mu.magnitude_prune(tv, w, density),
                   ties=mu.ties(tv, w, density), ties_frequency=mu.ties(tv, w, density, majority_sign_method='frequency'))
        torch.manual_seed(tensor_seed(seed, k)); ref['dare_linear'] = mu.dare_linear(tv, w, density)
        torch.manual_seed(tensor_seed(seed, k)); ref['dare_ties'] = mu.dare_ties(tv, w, density)
        for meth, r in ref.items():
            got = ours[meth][k].float() - s0[k].float()
            assert torch.allclose(got, r, atol=1e-6, rtol=0), f'{meth} differs from PEFT on {k}: {float((got - r).abs().max())}'
            checked += 1
    assert checked == 6 * len(ours['ties']) and checked > 50

def test_dare_seed_is_reproducible_and_order_free(fam):
    _, m0, _, ms = fam
    a = merge(m0, ms, 'dare_ties', seed=1)
    b = merge(m0, ms, 'dare_ties', seed=1)
    c = merge(m0, ms, 'dare_ties', seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)

def _snapshot(d:Path) -> dict:
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob('*')) if p.is_file()}

@pytest.fixture(scope='module')
def dirs(tmp_path_factory, fam):
    name, m0, tok, ms = fam
    root = tmp_path_factory.mktemp(f'merge_{name}')
    for i, m in enumerate([m0, *ms]):
        m.save_pretrained(root / f'm{i}'); tok.save_pretrained(root / f'm{i}')
    return root, m0, ms

@pytest.mark.parametrize('method,kw', [('task_arithmetic', dict(lam=0.7)), ('ties', dict(density=0.3)), ('ties', dict(trim='model')),
                                       ('dare_ties', dict(seed=3)), ('breadcrumbs', {}), ('model_stock', {}), ('lines', {}),
                                       ('linear', {}), ('soup', {})])
def test_streamed_output_equals_memory_and_inputs_untouched(dirs, method, kw, tmp_path):
    root, m0, ms = dirs
    before = {i: _snapshot(root / f'm{i}') for i in range(4)}
    sd = merge(m0, ms, method, **kw)
    out = merge(root / 'm0', [root / f'm{i}' for i in (1, 2, 3)], method, out=tmp_path / 'out', max_shard_size='20KB', **kw)
    files = sorted(p.name for p in out.iterdir())
    assert 'model.safetensors.index.json' in files and sum(f.endswith('.safetensors') for f in files) > 2, files
    assert {'config.json', 'tokenizer.json', 'ftlab_merge.json'} <= set(files)
    w = open_weights(out)
    assert set(w) == set(sd) and all(torch.equal(w[k], sd[k]) for k in sd), f'{method}: streamed output differs from the in-memory merge'
    rec = json.loads((out / 'ftlab_merge.json').read_text())
    assert rec['method'] == method and len(rec['models']) == 3
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(out)
    assert torch.isfinite(m(torch.tensor([[1, 2, 3]])).logits).all()
    assert {i: _snapshot(root / f'm{i}') for i in range(4)} == before, 'an input model directory changed'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out'], 'temporary files left beside the output'

def test_bf16_output_and_dtype(dirs, tmp_path):
    root, m0, ms = dirs
    out = merge(root / 'm0', [root / 'm1'], 'task_arithmetic', out=tmp_path / 'bf', dtype='bfloat16')
    w = open_weights(out)
    assert {w[k].dtype for k in w if w[k].is_floating_point()} == {torch.bfloat16}
    sd = merge(m0, [ms[0]], 'task_arithmetic')
    assert all(torch.equal(w[k], sd[k].to(torch.bfloat16)) for k in sd)

def test_overwrite_and_no_partial_output(dirs, tmp_path):
    root, m0, ms = dirs
    out = tmp_path / 'o'
    merge(root / 'm0', [root / 'm1'], out=out)
    with pytest.raises(MergeError, match='exists; pass overwrite=True'): merge(root / 'm0', [root / 'm1'], out=out)
    merge(root / 'm0', [root / 'm1', root / 'm2'], 'ties', out=out, overwrite=True)
    assert json.loads((out / 'ftlab_merge.json').read_text())['method'] == 'ties'
    with pytest.raises(MergeError, match=r'\(0, 1\]'): merge(root / 'm0', [root / 'm1'], 'ties', density=0.0, out=tmp_path / 'bad')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['o']

def test_mixed_families_are_refused():
    l0, _ = tiny_model('llama'); g0, _ = tiny_model('gpt2')
    with pytest.raises(MergeError, match='does not align'): merge(l0, [g0])

def test_cli_yaml(dirs, tmp_path):
    root, m0, ms = dirs
    yml = tmp_path / 'c.yml'
    yml.write_text(f"merge_method: ties\nbase_model: {root / 'm0'}\nmodels:\n"
                   f"  - model: {root / 'm1'}\n    parameters: {{weight: 1.0, density: 0.4}}\n"
                   f"  - model: {root / 'm2'}\n    parameters: {{weight: 0.5, density: 0.6}}\n"
                   f"parameters: {{normalize: true}}\ndtype: float32\n")
    r = subprocess.run([str(FTLAB), 'merge', str(yml), str(tmp_path / 'out')], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    assert 'Merged 2 model(s) with ties' in r.stdout
    sd = merge(m0, ms[:2], 'ties', [1.0, 0.5], density=[0.4, 0.6])
    w = open_weights(tmp_path / 'out')
    assert all(torch.equal(w[k], sd[k]) for k in sd)
    yml.write_text(yml.read_text() + 'slices: []\n')
    r = subprocess.run([str(FTLAB), 'merge', str(yml), str(tmp_path / 'out2')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "unsupported key(s) ['slices']" in r.stderr, r.stderr
    assert not (tmp_path / 'out2').exists()
