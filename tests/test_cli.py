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
    for cmd in ('demo', 'zoo', 'eval'): assert cmd in r.stdout, f'`ftlab --help` does not list {cmd!r}:\n{r.stdout}'

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
