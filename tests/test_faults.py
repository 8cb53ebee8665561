"""Fault injection: what a careless or unlucky user does, and what ftlab must do about it.

Each test is one row of ftlab's promise (README, "What ftlab guarantees"): inputs are never touched, a bad input
is a one-line error that names the file or parameter and the fix (exit status 2 from the CLI, no traceback), a
result that would be NaN is refused, and no half-made output or temporary is left behind. Inputs are checked by
hashing every file before and after. Runs in-process through `ftlab.cli.main` (fast) unless a real process is
needed (a kill -9, two writers at once). Training's own faults are in tests/test_faults_train.py.
"""
import hashlib, json, os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file, save_file
from ftlab.cli import main
from ftlab.core import ZOO_DIR

ZOO = ZOO_DIR / 'llama'

def tree_sha(d:Path) -> dict:
    "sha256 of every file under `d` (the whole tree), by relative path."
    d = Path(d)
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob('*')) if p.is_file()}

def run(capsys, *args) -> tuple[int, str]:
    "`ftlab ARGS` in-process: (exit status, stderr)."
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err

def refused(capsys, *args, says:str) -> str:
    rc, err = run(capsys, *args)
    assert rc == 2, f'ftlab {" ".join(map(str, args))}: exit {rc}, expected 2 (a user error); stderr:\n{err}'
    assert says in err, f'expected {says!r} in the error, got:\n{err}'
    assert 'Traceback' not in err and 'Errno' not in err and not err.strip().endswith((': 20', ': 21', ': 2', ': 17')), err
    return err

def leftovers(d:Path) -> list[str]:
    "Temporaries ftlab might leave in `d`."
    return sorted(p.name for p in Path(d).iterdir() if '.tmp' in p.name or p.name.startswith('.') or '.old' in p.name)

@pytest.fixture
def base(tmp_path):
    "A copy of the zoo's llama: the input a user hands ftlab."
    d = tmp_path / 'base'; shutil.copytree(ZOO, d); return d

@pytest.fixture
def ft(tmp_path):
    "A fine-tune of it: every float weight moved a little (same config and tokenizer)."
    d = tmp_path / 'ft'; shutil.copytree(ZOO, d)
    g = torch.Generator().manual_seed(0)
    sd = load_file(d / 'model.safetensors')
    save_file({k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()},
              d / 'model.safetensors', metadata={'format': 'pt'})
    return d

def damaged(tmp_path, name:str, how) -> Path:
    "A copy of the zoo llama whose model.safetensors was damaged by `how(bytes) -> bytes`."
    d = tmp_path / name; shutil.copytree(ZOO, d)
    f = d / 'model.safetensors'; f.write_bytes(how(f.read_bytes()))
    return d

# ---------------------------------------------------------------- inputs never written or destroyed
WRITERS = {  # command line writing to OUT, with BASE (a model dir) as its input
    'train': lambda b, f, o: ['train', '--base', b, '--task', 'sort', '--out', o, '--steps', 2, '--n-eval', 4, '--overwrite'],
    'demo': lambda b, f, o: ['demo', '--model', b, '--out', o, '--n', 4, '--train-steps', 0, '--no-patching'],
    'merge': lambda b, f, o: ['merge', '--method', 'task_arithmetic', '--base', b, '--model', f, o, '--overwrite'],
    'intruders': lambda b, f, o: ['intruders', b, f, '--out', o, '--overwrite'],
    'graft': lambda b, f, o: ['graft', b, f, '--task', 'sort', '--out', o, '--steps', 0, '--overwrite'],
}

@pytest.mark.parametrize('cmd', list(WRITERS))
@pytest.mark.parametrize('where', ['equal', 'inside', 'parent'])
def test_out_never_touches_an_input(capsys, base, ft, tmp_path, cmd, where):
    "An output equal to, inside or containing an input model is refused, even with --overwrite; the inputs stay byte-identical."
    before = {d.name: tree_sha(d) for d in (base, ft)}
    for inp in ((base,) if cmd in ('train', 'demo') else (base, ft)):     # train and demo read the base only
        out = {'equal': inp, 'inside': inp / 'out', 'parent': tmp_path}[where]
        refused(capsys, *WRITERS[cmd](base, ft, out), says='never writes into an input')
    assert {d.name: tree_sha(d) for d in (base, ft)} == before
    assert not (base / 'out').exists() and not (ft / 'out').exists()

def test_zoo_names_are_guarded(capsys, tmp_path):
    "A zoo name is resolved to its directory: an output under the installed zoo is refused."
    before = tree_sha(ZOO)
    refused(capsys, 'demo', '--model', 'llama', '--out', ZOO / 'report', '--n', 4, says='never writes into an input')
    refused(capsys, 'intruders', 'llama', ZOO_DIR / 'llama-v1', '--out', ZOO / 'x.csv', says='never writes into an input')
    assert tree_sha(ZOO) == before

# ---------------------------------------------------------------- outputs: exclusive, complete, no leftovers
def test_existing_output_file_is_refused_without_overwrite(capsys, base, ft, tmp_path):
    out = tmp_path / 'table.csv'; out.write_text('precious')
    refused(capsys, 'intruders', base, ft, '--out', out, says='table.csv exists; pass overwrite=True')
    assert out.read_text() == 'precious'
    assert run(capsys, 'intruders', base, ft, '--out', out, '--overwrite')[0] == 0 and out.read_text().startswith('layer')
    m = tmp_path / 'merged'; m.mkdir(); (m / 'keep').write_text('x')
    refused(capsys, 'merge', '--method', 'task_arithmetic', '--base', base, '--model', ft, m, says='exists; pass overwrite=True')
    assert (m / 'keep').read_text() == 'x'

def test_merge_overwrite_replaces_a_file_and_leaves_no_temporary(capsys, base, ft, tmp_path):
    "Was: `error: 20` and a complete merged model left in f.tmpPID/."
    f = tmp_path / 'f'; f.write_text('old')
    rc, err = run(capsys, 'merge', '--method', 'task_arithmetic', '--base', base, '--model', ft, f, '--overwrite')
    assert rc == 0, err
    assert (f / 'model.safetensors').exists() and leftovers(tmp_path) == []

KILLED_WRITER = textwrap.dedent('''
    import sys, time
    from ftlab.merge import merge
    import ftlab.merge as M
    slow = M.METHODS['task_arithmetic'].fn
    def crawl(*a, **k): time.sleep(0.5); return slow(*a, **k)
    M.METHODS['task_arithmetic'] = M.METHODS['task_arithmetic'].__class__(**{**M.METHODS['task_arithmetic'].__dict__, 'fn': crawl})
    merge(sys.argv[1], [sys.argv[2]], out=sys.argv[3])
''')

def test_killed_merge_temporary_is_swept_by_the_next_run(capsys, base, ft, tmp_path):
    "kill -9 mid-merge leaves OUT.tmpPID/; the next write to OUT removes it (and says so), and the output is complete."
    out = tmp_path / 'merged'
    p = subprocess.Popen([sys.executable, '-c', KILLED_WRITER, str(base), str(ft), str(out)], env={**os.environ, 'OMP_NUM_THREADS': '1'})
    tmp = out.with_name(f'merged.tmp{p.pid}')
    for _ in range(600):
        if (tmp / 'model.safetensors').exists() or p.poll() is not None: break
        time.sleep(0.1)
    assert p.poll() is None, 'the writer finished before it could be killed'
    p.send_signal(signal.SIGKILL); p.wait()
    assert tmp.is_dir() and not out.exists()
    with pytest.warns(UserWarning, match='left by killed ftlab writers'):
        rc, err = run(capsys, 'merge', '--method', 'task_arithmetic', '--base', base, '--model', ft, out)
    assert rc == 0, err
    assert leftovers(tmp_path) == [] and (out / 'model.safetensors').exists()

def test_two_merges_into_one_new_output(base, ft, tmp_path):
    "Two writers to the same new OUT: exactly one wins; the other fails clearly instead of replacing it."
    out = tmp_path / 'merged'
    cmd = lambda w: [str(Path(sys.executable).parent / 'ftlab'), 'merge', '--method', 'task_arithmetic', '--base', str(base),
                     '--model', str(ft), '--weight', str(w), str(out)]
    ps = [subprocess.Popen(cmd(w), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, 'OMP_NUM_THREADS': '1'}) for w in (0.5, 1.0)]
    res = [(p.wait(timeout=300), p.stderr.read()) for p in ps]
    assert sorted(rc for rc, _ in res) == [0, 2], res
    err = next(e for rc, e in res if rc == 2)
    assert 'exists' in err or 'created by another writer' in err, err
    winner = [0.5, 1.0][[rc for rc, _ in res].index(0)]
    assert json.loads((out / 'ftlab_merge.json').read_text())['weights'] == [winner]   # the winner's output, intact
    assert leftovers(tmp_path) == []

def test_identical_masks_write_identical_bytes(tmp_path):
    "Was: the same mask written by two processes differed (safetensors metadata in hash order)."
    code = textwrap.dedent('''
        import sys, torch, pandas as pd
        from ftlab.localize import Mask
        g = torch.Generator().manual_seed(0)
        m = Mask({f'model.layers.{i}.mlp.up_proj.weight': torch.rand(8, 8, generator=g) > 0.9 for i in range(3)},
                 log=pd.DataFrame(dict(step=[0, 1], loss=[1.0, 0.5])), meta=dict(sparsity=1e-3, seed=0, best_step=1))
        m.base_patch = m
        m.save(sys.argv[1])
    ''')
    for i, seed in enumerate(('1', '2')):
        subprocess.run([sys.executable, '-c', code, str(tmp_path / f'{i}.safetensors')], check=True,
                       env={**os.environ, 'PYTHONHASHSEED': seed})
    assert (tmp_path / '0.safetensors').read_bytes() == (tmp_path / '1.safetensors').read_bytes()

# ---------------------------------------------------------------- damaged files: named, with the fix
DAMAGE = {'truncated': lambda b: b[:len(b) // 2], 'garbage': lambda b: os.urandom(4096),
          'header bit flip': lambda b: b[:20] + bytes([b[20] ^ 0x40]) + b[21:]}

@pytest.mark.parametrize('how', list(DAMAGE))
def test_damaged_safetensors_is_named(capsys, tmp_path, ft, how):
    bad = damaged(tmp_path, 'bad', DAMAGE[how])
    before = tree_sha(bad)
    for args in (['eval', bad, '--task', 'sort', '--n', 4], ['intruders', bad, ft, '--out', tmp_path / 't.csv'],
                 ['merge', '--method', 'ties', '--base', bad, '--model', ft, tmp_path / 'm'],
                 ['train', '--base', bad, '--out', tmp_path / 'run', '--steps', 2]):
        refused(capsys, *args, says=f'{bad / "model.safetensors"} is damaged')
    assert tree_sha(bad) == before and not (tmp_path / 'run').exists() and not (tmp_path / 'm').exists()

def test_index_naming_an_absent_tensor(capsys, tmp_path):
    d = tmp_path / 'm'; shutil.copytree(ZOO, d)
    names = list(load_file(d / 'model.safetensors'))
    (d / 'model.safetensors.index.json').write_text(json.dumps(dict(weight_map={**{k: 'model.safetensors' for k in names},
                                                                                'model.extra.weight': 'model.safetensors'})))
    refused(capsys, 'eval', d, '--task', 'sort', '--n', 4, says="names 1 tensor(s) its shards do not hold (e.g. 'model.extra.weight'")

def test_invalid_config_json_names_the_file(capsys, tmp_path, ft):
    d = tmp_path / 'm'; shutil.copytree(ZOO, d)
    (d / 'config.json').write_text((d / 'config.json').read_text()[:40])
    refused(capsys, 'eval', d, '--task', 'sort', '--n', 4, says=f'{d / "config.json"}, line')
    refused(capsys, 'intruders', ft, d, '--out', tmp_path / 't.csv', says=f'{d / "config.json"}, line')

def test_missing_tokenizer_is_named(capsys, tmp_path):
    "Was: transformers' 'install sentencepiece' for a directory with no tokenizer at all."
    d = tmp_path / 'm'; shutil.copytree(ZOO, d, ignore=shutil.ignore_patterns('tokenizer*', 'special_tokens*'))
    refused(capsys, 'eval', d, '--task', 'sort', '--n', 4, says='has no tokenizer')

def test_oserror_prints_reason_and_path(capsys, base, ft, tmp_path):
    "Was: `error: 20`."
    (tmp_path / 'afile').write_text('x')
    err = refused(capsys, 'merge', '--method', 'task_arithmetic', '--base', base, '--model', ft, tmp_path / 'afile' / 'out',
                  says='Not a directory')
    assert str(tmp_path / 'afile') in err

# ---------------------------------------------------------------- bad parameters: refused before any work
@pytest.mark.parametrize('args,says', [
    (['--dtype', 'foo'], "dtype='foo'"), (['--dtype', 'int8'], 'floating dtype'), (['--dtype', 'bool'], 'floating dtype'),
    (['--param', 'density=high'], "density='high': expected a number"), (['--param', 'lam=NaN'], 'lam=nan'),
    (['--weight', 'nan'], 'weights[0]=nan'),
])
def test_merge_bad_parameters(capsys, base, ft, tmp_path, args, says):
    out = tmp_path / 'm'
    method = 'ties' if 'density' in str(args) else 'task_arithmetic'
    refused(capsys, 'merge', '--method', method, '--base', base, '--model', ft, *args, out, says=says)
    assert not out.exists() and leftovers(tmp_path) == []

@pytest.mark.parametrize('weights,says', [((0, 0), 'sum to 0'), ((1, -1), 'sum to 0')])
def test_linear_merge_with_zero_weight_sum(capsys, base, ft, tmp_path, weights, says):
    args = [a for w in weights for a in ('--model', ft, '--weight', w)]
    refused(capsys, 'merge', '--method', 'linear', *args, tmp_path / 'm', says=says)

@pytest.mark.parametrize('gamma,says', [(-0.5, 'gamma=-0.5 is out of range'), (0.9, 'must sum to at most 1')])
def test_breadcrumbs_gamma(capsys, base, ft, tmp_path, gamma, says):
    refused(capsys, 'merge', '--method', 'breadcrumbs', '--base', base, '--model', ft, '--param', f'gamma={gamma}',
            '--param', 'density=0.5', tmp_path / 'm', says=says)

def yaml_config(tmp_path, base, ft, extra:str) -> Path:
    p = tmp_path / 'merge.yml'
    p.write_text(f'merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - model: {ft}\n{extra}')
    return p

@pytest.mark.parametrize('extra,says', [
    ('dtype: float8\n', "dtype='float8'"), ('parameters:\n  lambda: .nan\n', 'lam=nan'),
    ('parameters:\n  lambda: [1,\n', 'merge.yml, line'),
])
def test_merge_bad_yaml(capsys, base, ft, tmp_path, extra, says):
    refused(capsys, 'merge', yaml_config(tmp_path, base, ft, extra), tmp_path / 'm', says=says)
    assert not (tmp_path / 'm').exists()

def alias_bomb(levels:int) -> str:
    "A YAML list whose last item expands to 9**levels numbers through nested aliases (9 aliases per level)."
    names = [f'l{i}' for i in range(levels)]
    items = ['&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]'] + [f'&{c} [{", ".join([f"*{p}"] * 9)}]' for p, c in zip(names, names[1:])]
    return '[' + ', '.join(items) + ']'

@pytest.mark.parametrize('levels,says', [(9, 'per-layer gradients and filtered values'), (13, 'more than 100 YAML aliases')])
def test_yaml_alias_bomb_is_refused_at_once(capsys, base, ft, tmp_path, levels, says):
    "Was: 38 s and ~3 GB, then a MemoryError (the value's repr built into the message)."
    p = yaml_config(tmp_path, base, ft, f'parameters:\n  lambda: {alias_bomb(levels)}\n')
    t0 = time.time()
    err = refused(capsys, 'merge', p, tmp_path / 'm', says=says)
    assert time.time() - t0 < 10 and len(err) < 600, (time.time() - t0, len(err))

@pytest.mark.parametrize('args,says', [
    (['eval', 'llama', '--task', 'sort', '--n', 0], '--n=0 is out of range'),
    (['demo', '--n', 0, '--out', '{tmp}/r'], 'n=0 is out of range'),
    (['graft', '{base}', '{ft}', '--task', 'sort', '--n-train', 0, '--out', '{tmp}/m.safetensors'], 'n_train=0 is out of range'),
    (['graft', '{base}', '{ft}', '--task', 'sort', '--lr', 'nan', '--out', '{tmp}/m.safetensors'], 'lr=nan'),
    (['graft', '{base}', '{ft}', '--task', 'sort', '--sigmoid-bias', 'nan', '--out', '{tmp}/m.safetensors'], 'sigmoid_bias=nan'),
])
def test_counts_and_rates_checked_first(capsys, base, ft, tmp_path, args, says):
    args = [str(a).format(tmp=tmp_path, base=base, ft=ft) for a in args]
    refused(capsys, *args, says=says)
    assert not (tmp_path / 'r').exists() and not (tmp_path / 'm.safetensors').exists()

def test_merge_models_given_as_a_string(base, ft):
    "Was: the string was iterated character by character (and listed the filesystem root)."
    from ftlab.merge import merge
    with pytest.raises(ValueError, match='must be a list of models'): merge(str(base), str(ft))

# ---------------------------------------------------------------- NaN and inf: refused, never written
def nan_copy(src:Path, dst:Path, value=float('nan')) -> Path:
    shutil.copytree(src, dst)
    sd = load_file(dst / 'model.safetensors')
    k = next(k for k in sd if 'mlp.up_proj' in k); sd[k][0, 0] = value
    save_file(sd, dst / 'model.safetensors', metadata={'format': 'pt'})
    return dst

def test_merge_with_nan_input(capsys, base, ft, tmp_path):
    bad = nan_copy(ft, tmp_path / 'nan_ft')
    refused(capsys, 'merge', '--method', 'ties', '--base', base, '--model', bad, tmp_path / 'm', says='holds NaN or inf')
    assert not (tmp_path / 'm').exists() and leftovers(tmp_path) == []

def test_graft_with_inf_fine_tune(capsys, base, ft, tmp_path):
    "Was: a mask written with NaN loss (and with NaN: RuntimeError: bincount)."
    bad = nan_copy(ft, tmp_path / 'inf_ft', float('inf'))
    refused(capsys, 'graft', base, bad, '--task', 'sort', '--out', tmp_path / 'm.safetensors', says='holds NaN or inf')
    assert not (tmp_path / 'm.safetensors').exists()

def test_eval_and_patching_of_a_nan_model(capsys, tmp_path):
    "Was: ECE 0.0, and a table of NaN patching scores."
    bad = nan_copy(ZOO, tmp_path / 'nan')
    refused(capsys, 'eval', bad, '--task', 'sort', '--n', 4, says='The model outputs NaN or inf')
    from ftlab.sources import load
    from ftlab.patching import act_patch, query_pairs
    m, tok = load(bad)
    clean, corrupt = query_pairs('kv', 4)
    with pytest.raises(ValueError, match='NaN or inf'): act_patch(m, tok, clean, corrupt)
