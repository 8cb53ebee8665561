"The `ftlab` console script, run as a user would: exit codes, stdout tables and stderr messages."
import os, subprocess, sys
from pathlib import Path
import pytest

FTLAB = Path(sys.executable).parent / 'ftlab'
COLUMNS = ['task', 'split', 'n', 'accuracy', 'chance', 'logprob', 'ece']

def ftlab(*args, cwd=None, timeout=180, **env):
    assert FTLAB.exists(), f'{FTLAB} not found: pip install -e . (make setup)'
    return subprocess.run([str(FTLAB), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', **env})

@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    "A tiny random LLaMA saved as a HF model directory (safetensors)."
    from ftlab.zoo import tiny_model
    d = tmp_path_factory.mktemp('tiny_llama')
    m, tok = tiny_model('llama')
    m.save_pretrained(d); tok.save_pretrained(d)
    return d

@pytest.fixture(scope='module')
def pickle_dir(tmp_path_factory):
    "The same tiny model with only pickle weights (pytorch_model.bin)."
    import torch
    from ftlab.zoo import tiny_model
    d = tmp_path_factory.mktemp('tiny_pickle')
    m, tok = tiny_model('llama')
    m.config.save_pretrained(d); tok.save_pretrained(d)
    torch.save(m.state_dict(), d / 'pytorch_model.bin')
    assert not list(d.glob('*.safetensors'))
    return d

def test_help_lists_commands():
    r = ftlab('--help')
    assert r.returncode == 0, r.stderr
    for cmd in ('demo', 'zoo', 'eval', 'train', 'runs', 'intruders'): assert cmd in r.stdout, f'`ftlab --help` does not list {cmd!r}:\n{r.stdout}'

def test_no_command_is_a_usage_error():
    r = ftlab()
    assert r.returncode == 2 and 'usage' in r.stderr.lower(), (r.returncode, r.stderr)

def _table(stdout:str) -> list[list[str]]:
    lines = [l.split() for l in stdout.strip().splitlines() if l.strip()]
    assert lines and lines[0] == COLUMNS, f'expected a table with header {COLUMNS}, got:\n{stdout}'
    return lines[1:]

def test_eval_prints_table(tiny_dir):
    r = ftlab('eval', tiny_dir, '--task', 'copy', '--task', 'sort:ood', '--n', 16)
    assert r.returncode == 0, r.stderr
    rows = _table(r.stdout)
    assert [row[:3] for row in rows] == [['copy', 'id', '16'], ['sort', 'ood', '16']], r.stdout
    for row in rows:
        acc, chance = float(row[3]), float(row[4])
        assert 0 <= acc <= 1 and 0 < chance < 1, row

def test_eval_unknown_task(tiny_dir):
    r = ftlab('eval', tiny_dir, '--task', 'nosuchtask', '--n', 16)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert 'Valid tasks' in r.stderr and 'nosuchtask' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr and not r.stdout.strip(), r.stderr

def test_eval_pickle_needs_opt_in(pickle_dir):
    r = ftlab('eval', pickle_dir, '--task', 'copy', '--n', 16)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert 'allow-pickle' in r.stderr or 'allow_pickle' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    r = ftlab('eval', pickle_dir, '--task', 'copy', '--n', 16, '--allow-pickle')
    assert r.returncode == 0, r.stderr
    assert [row[:3] for row in _table(r.stdout)] == [['copy', 'id', '16']], r.stdout

@pytest.mark.parametrize('kind', ['absolute', 'dot-relative', 'relative', 'empty-dir'])
def test_eval_missing_model(tmp_path, kind):
    "A path that holds no model exits 2 with a one-line message naming it, never a traceback or a hub download."
    (tmp_path / 'empty').mkdir()
    arg = {'absolute': tmp_path / 'no_such_model', 'dot-relative': './no_such_model',
           'relative': 'models/no_such_model', 'empty-dir': 'empty'}[kind]
    # HF_HUB_OFFLINE: a path mistaken for a hub id must not wait on the network (it would retry for ~1 min).
    r = ftlab('eval', arg, '--task', 'copy', '--n', 16, cwd=tmp_path, timeout=60, HF_HUB_OFFLINE='1')
    if r.returncode != 2 or 'Traceback' in r.stderr:
        pytest.fail(f'`ftlab eval {arg}` exited {r.returncode} (expected 2, no traceback); stderr ends:\n{r.stderr[-600:]}')
    assert 'no_such_model' in r.stderr or 'empty' in r.stderr, r.stderr

def test_train_lora_then_runs(tmp_path):
    "`ftlab train` writes a run whose checkpoints load with peft; `ftlab runs` lists it; a second call is refused."
    out = tmp_path / 'runs' / 'sort-lora'
    r = ftlab('train', '--base', 'llama', '--task', 'sort', '--method', 'lora', '--r', 4, '--steps', 20,
              '--eval-every', 10, '--n-eval', 32, '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'Run written to' in r.stdout and 'task_acc' in r.stdout, r.stdout
    ck = out / 'checkpoints' / 'step-000020'
    assert (ck / 'adapter_config.json').exists() and (ck / 'adapter_model.safetensors').exists(), list(out.rglob('*'))
    from peft import PeftModel
    from ftlab.zoo import load
    base, _ = load('llama')
    pm = PeftModel.from_pretrained(base, ck)
    assert pm.peft_config['default'].r == 4
    again = ftlab('train', '--task', 'sort', '--out', out, '--steps', 20)
    assert again.returncode == 2 and 'overwrite' in again.stderr, (again.returncode, again.stderr)
    listed = ftlab('runs', tmp_path / 'runs')
    assert listed.returncode == 0 and 'sort-lora' in listed.stdout and 'lora' in listed.stdout, listed.stdout
    # `ftlab intruders` on the adapter: one row per (matrix, j), counts equal the reference computation's
    import pandas as pd
    from ftlab.spectral import intruders_reference
    from ftlab.weights import ModelPair
    from ftlab.zoo import ZOO_DIR
    r = ftlab('intruders', 'llama', '--adapter', ck, '--out', tmp_path / 'intr.csv')
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / 'intr.csv')
    assert list(t.columns) == ['layer', 'module', 'name', 'j', 'sigma', 's', 'best_base', 'is_intruder'] and len(t) == 28 * 10, t.head()
    pair = ModelPair(ZOO_DIR / 'llama', None, adapter=ck)
    n_ref = sum(intruders_reference(pair.base[n], pair.ft[n])[1] for n in t.name.unique())
    assert int((t.s < 0.5).sum()) == n_ref and f'{n_ref} intruders' in r.stdout, (r.stdout, n_ref)

def test_intruders_full_model_dir(tmp_path):
    "A model directory with one planted high-ranking new direction: exactly that matrix has intruders."
    import torch, pandas as pd
    from ftlab.zoo import load
    m, tok = load('llama')
    W = m.model.layers[2].mlp.down_proj.weight
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(W.shape[0], 1, generator=g), torch.randn(W.shape[1], 1, generator=g)
    with torch.no_grad(): W += 5 * W.norm(2) * (u / u.norm()) @ (v / v.norm()).T
    m.save_pretrained(tmp_path / 'ft'); tok.save_pretrained(tmp_path / 'ft')
    r = ftlab('intruders', 'llama', tmp_path / 'ft', '--out', tmp_path / 'i.csv')
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / 'i.csv')
    hit = t[t.s < 0.5]
    assert hit.name.unique().tolist() == ['model.layers.2.mlp.down_proj.weight'] and hit.j.tolist() == [1], hit

def test_intruders_bad_input(tmp_path):
    "An ε outside (0, 1) and a directory that is not an adapter: exit 2, one line naming the fix, no output file."
    from ftlab.zoo import ZOO_DIR
    r = ftlab('intruders', 'llama', ZOO_DIR / 'llama', '--eps', '1.5', '--out', tmp_path / 'x.csv')
    assert r.returncode == 2 and 'eps=1.5 is outside (0, 1)' in r.stderr, r.stderr
    (tmp_path / 'notadapter').mkdir()
    r = ftlab('intruders', 'llama', '--adapter', tmp_path / 'notadapter', '--out', tmp_path / 'x.csv')
    assert r.returncode == 2 and 'not a peft adapter directory' in r.stderr, r.stderr
    assert not (tmp_path / 'x.csv').exists()
    r = ftlab('intruders', 'llama', ZOO_DIR / 'llama', '--k', '0', '--out', tmp_path / 'x.csv')
    assert r.returncode == 2 and 'k=0: use a positive whole number' in r.stderr, r.stderr

def test_intruders_never_writes_into_inputs(tmp_path):
    "--out inside the fine-tuned model's directory, or inside the zoo base's: refused (exit 2), nothing written."
    import shutil
    from ftlab.zoo import ZOO_DIR
    shutil.copytree(ZOO_DIR / 'llama', tmp_path / 'ft')
    for out in (tmp_path / 'ft' / 't.csv', ZOO_DIR / 'llama' / 'ftlab-test-t.csv'):
        try:
            r = ftlab('intruders', 'llama', tmp_path / 'ft', '--out', out)
            assert r.returncode == 2 and 'is inside the input model directory' in r.stderr, r.stderr
            assert not out.exists()
        finally: out.unlink(missing_ok=True)

def test_train_bad_method_lists_valid(tmp_path):
    r = ftlab('train', '--method', 'qlora', '--out', tmp_path / 'x')
    assert r.returncode == 2 and 'full, lora, rslora, dora, sparse' in r.stderr, r.stderr
    assert not (tmp_path / 'x').exists()

def test_train_unknown_target(tmp_path):
    r = ftlab('train', '--targets', 'ffn', '--out', tmp_path / 'x')
    assert r.returncode == 2 and "Unknown target module 'ffn'" in r.stderr and 'attn, mlp, all' in r.stderr, r.stderr

def test_train_and_demo_never_write_into_the_base(tiny_dir, tmp_path):
    "train/demo with --out inside, equal to, or around the base model's directory: refused (exit 2), the base untouched."
    import hashlib
    snap = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tiny_dir.iterdir())}
    before = snap()
    for out in (tiny_dir / 'run', tiny_dir, tiny_dir.parent):
        r = ftlab('train', '--base', tiny_dir, '--task', 'sort', '--method', 'full', '--steps', '2', '--out', out, '--overwrite')
        assert r.returncode == 2 and 'never writes into an input' in r.stderr, r.stderr
    r = ftlab('demo', '--model', tiny_dir, '--out', tiny_dir / 'report', '--n', '8')
    assert r.returncode == 2 and 'never writes into an input' in r.stderr, r.stderr
    assert snap() == before and not (tiny_dir / 'run').exists() and not (tiny_dir / 'report').exists()
