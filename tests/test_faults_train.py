"""Fault injection for `ftlab.train` (issue 37): nothing lost, nothing silent.

Every refused call raises `FtlabError` naming the problem and the fix, makes no run directory (or changes no file of an
existing one) and leaves its inputs byte-identical; a failed or killed run says so; `tokens` continue across a resume;
one damaged file never hides the other runs."""
import hashlib, json, math, os, shutil, signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path
import pytest
import torch

from ftlab.core import FtlabError, ZOO_DIR
from ftlab.train import finetune, runs, Run

SMALL = dict(steps=4, eval_every=0, n_eval=8, n_train=64, batch_size=4, seq_len=64, forget_tasks=(), threads=1,
             progress=False)
RESUMABLE = dict(SMALL, eval_every=2, save_every=2)      # a checkpoint and an evaluation at step 2


def snap(d: Path) -> dict:
    "sha256 of every file under `d`, by relative path."
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob('*')) if p.is_file()}


@pytest.fixture
def base(tmp_path):
    "A copy of the zoo llama (1M parameters) that the tests train from, and its file hashes."
    d = tmp_path / 'llama'
    shutil.copytree(ZOO_DIR / 'llama', d)
    return d, snap(d)


class Stop(Exception): pass

def _stop_at_2(row):
    if row['step'] == 2: raise Stop()

@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
    "(base copy, run dir): a run of RESUMABLE stopped by an exception at its step-2 evaluation, after the step-2 checkpoint."
    root = tmp_path_factory.mktemp('interrupted')
    d = root / 'llama'
    shutil.copytree(ZOO_DIR / 'llama', d)
    with pytest.raises(Stop):
        finetune(str(d), 'sort', 'full', root / 'part', callbacks=[_stop_at_2], **RESUMABLE)
    return d, root / 'part'

def _copy_interrupted(interrupted, tmp_path):
    d, part = interrupted
    shutil.copytree(part, tmp_path / 'part')
    return d, snap(d), tmp_path / 'part'


def refused(fn, fragment, out: Path, inputs):
    "fn() raises FtlabError containing `fragment`; `out` was not made; every (dir, hashes) input is unchanged."
    with pytest.raises(FtlabError) as e:
        fn()
    assert fragment in str(e.value), str(e.value)
    assert not out.exists(), sorted(out.rglob('*'))
    for d, before in inputs: assert snap(d) == before, d
    return str(e.value)


# 1. Validation before any side effect ------------------------------------------------------------------------------

BAD = [('steps', 0, 'a whole number in [1, inf)'), ('steps', -1, '[1, inf)'), ('batch_size', 0, '[1, inf)'),
       ('seq_len', 0, '[1, inf)'), ('n_train', 0, '[1, inf)'), ('n_eval', 0, '[1, inf)'),
       ('eval_every', -1, 'a whole number in [0, inf)'), ('save_every', -1, '[0, inf)'), ('warmup', -1, '[0, inf)'),
       ('r', 0, '[1, inf)'), ('lr', float('nan'), 'a number in (0, inf)'), ('lr', 0.0, '(0, inf)'), ('lr', -1e-3, '(0, inf)'),
       ('lr', float('inf'), '(0, inf)'), ('dropout', 1.0, '[0, 1)'), ('dropout', -0.1, '[0, 1)'), ('density', 0.0, '(0, 1]'),
       ('density', 1.5, '(0, 1]'), ('weight_decay', -1.0, '[0, inf)'), ('weight_decay', float('nan'), '[0, inf)'),
       ('threads', 0, '[1, inf)'), ('steps', 2.5, 'a whole number'), ('lr', '1e-3', 'a number')]

@pytest.mark.parametrize('field,value,rule', BAD, ids=[f'{f}={v}' for f, v, _ in BAD])
def test_bad_setting_refused_before_any_side_effect(base, tmp_path, field, value, rule):
    "A setting out of range: FtlabError naming the field, the value and the valid range; no run dir; base untouched."
    d, before = base
    out = tmp_path / 'runs' / 'r'
    method = 'lora' if field in ('r', 'dropout') else 'sparse' if field == 'density' else 'full'
    kw = dict(SMALL, **{field: value}, **(dict(mask='grad') if method == 'sparse' else {}))
    msg = refused(lambda: finetune(str(d), 'sort', method, out, **kw), f'{field}={value!r}', out, [(d, before)])
    assert f'expected {rule}' in msg or f'expected a whole number in {rule}' in msg or f'expected a number in {rule}' in msg, msg
    assert not (tmp_path / 'runs').exists()


def test_refused_inputs_leave_nothing_and_the_corrected_call_runs(base, tmp_path):
    """Model-dependent refusals (layers the base lacks, a missing mask file, rows shorter than the examples, an
    unsupported family) come before the run dir is made; the corrected rerun needs no overwrite; `runs` lists no junk."""
    from ftlab.zoo import load
    d, before = base
    root = tmp_path / 'runs'; out = root / 'r'
    cases = [(dict(method='full', layers=[9]), 'layers=[9] names layers the base does not have'),
             (dict(method='lora', layers=[9]), 'layers=[9] names layers the base does not have'),
             (dict(method='sparse', mask=str(tmp_path / 'no-mask.safetensors')), 'no-mask.safetensors does not exist'),
             (dict(method='full', seq_len=8), 'seq_len=8 is shorter than the longest training example')]
    for kw, fragment in cases:
        method = kw.pop('method')
        refused(lambda: finetune(str(d), 'sort', method, out, **dict(SMALL, **kw)), fragment, out, [(d, before)])
    m, tok = load('gpt2')                  # GPT-2's parameter names under a model type ftlab has no record for: not LLaMA's
    m.config.model_type = 'mystery'
    refused(lambda: finetune(str(d), 'sort', 'full', out, model_tok=(m, tok), **SMALL),
            "Unsupported architecture 'mystery' (its parameters ['transformer.h.0.ln_1.weight'", out, [(d, before)])
    assert not root.exists()
    run = finetune(str(d), 'sort', 'full', out, **SMALL)         # the corrected call: no "exists", no overwrite needed
    assert run.status['status'] == 'done' and sorted(run.checkpoints) == [4]
    assert runs(root).run.tolist() == ['r'] and snap(d) == before


def test_refused_overwrite_keeps_the_old_run(base, tmp_path):
    "overwrite=True with a bad setting: the existing run is not replaced (nothing removed before validation)."
    d, before = base
    out = tmp_path / 'r'
    finetune(str(d), 'sort', 'full', out, **SMALL)
    old = snap(out)
    with pytest.raises(FtlabError, match='seq_len=8 is shorter'):
        finetune(str(d), 'sort', 'full', out, overwrite=True, **dict(SMALL, seq_len=8))
    assert snap(out) == old and snap(d) == before


# 2. A base with non-finite weights ---------------------------------------------------------------------------------

def test_nan_base_is_a_damaged_model_not_an_lr_problem(base, tmp_path):
    "One NaN in the base's safetensors: FtlabError naming the tensor and 'damaged', not 'lower lr'; no run dir."
    from safetensors.torch import load_file, save_file
    d, _ = base
    f = d / 'model.safetensors'
    w = load_file(f)
    name = 'model.layers.1.mlp.up_proj.weight'
    w[name][0, 0] = float('nan')
    save_file(w, f, metadata={'format': 'pt'})
    before = snap(d)
    out = tmp_path / 'r'
    msg = refused(lambda: finetune(str(d), 'sort', 'full', out, **SMALL), 'is damaged', out, [(d, before)])
    assert name in msg and 'not a learning-rate problem' in msg and 'Lower lr' not in msg, msg


# 3. Run status that tells the truth --------------------------------------------------------------------------------

def test_exception_and_interrupt_write_failed_status(base, tmp_path):
    "An exception or a KeyboardInterrupt during training: status 'failed' with the message (pid, host, heartbeat), re-raised."
    d, before = base
    def boom(row):
        if row['step'] == 2: raise Stop('planted failure')
    with pytest.raises(Stop):
        finetune(str(d), 'sort', 'full', tmp_path / 'a', callbacks=[boom], **RESUMABLE)
    st = Run(tmp_path / 'a').status
    assert st['status'] == 'failed' and st['step'] == 2, st
    assert 'Stop: planted failure' in st['message'] and 'resume=True' in st['message'], st
    assert st['pid'] == os.getpid() and st['host'] and st['heartbeat'], st
    def interrupt(row):
        if row['step'] == 2: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        finetune(str(d), 'sort', 'full', tmp_path / 'b', callbacks=[interrupt], **dict(SMALL, eval_every=2))
    st = Run(tmp_path / 'b').status
    assert st['status'] == 'failed' and 'KeyboardInterrupt' in st['message'], st
    assert sorted(runs(tmp_path).status) == ['failed', 'failed'] and snap(d) == before


KILLED_SCRIPT = textwrap.dedent('''
    import sys, time
    from ftlab.train import finetune
    def slow(row): time.sleep(0.3)
    finetune(sys.argv[1], 'sort', 'full', sys.argv[2], steps=2000, eval_every=10, save_every=10, n_eval=8, n_train=64,
             batch_size=4, seq_len=64, forget_tasks=(), threads=1, progress=False, callbacks=[slow])
''')

def test_killed_run_is_reported_killed(base, tmp_path):
    "kill -9 of a training process: while it lived the status was 'running' with a heartbeat; then `Run.status` and `runs` say 'killed'."
    d, before = base
    out = tmp_path / 'runs' / 'k'
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    log = tmp_path / 'stderr.txt'
    with open(log, 'wb') as err:
        p = subprocess.Popen([sys.executable, '-c', KILLED_SCRIPT, str(d), str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=err)
    try:
        t0, st = time.time(), {}
        while time.time() - t0 < 60 and p.poll() is None:
            if (out / 'status.json').exists():
                try: st = Run(out).status
                except Exception: st = {}
                if st.get('step', 0) >= 10: break
            time.sleep(0.05)
        assert p.poll() is None, log.read_text()[-2000:]
        assert st.get('step', 0) >= 10, (st, log.read_text()[-2000:])
        assert st.get('status') == 'running' and st.get('pid') == p.pid and 'heartbeat_age' in st, st
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    st = Run(out).status
    assert st['status'] == 'killed', st
    assert f'died at step {st["step"]}' in st['message'] and 'resume=True' in st['message'], st['message']
    assert runs(tmp_path / 'runs').status.tolist() == ['killed']
    # the same status written on another host cannot be checked by pid: 'running', with the heartbeat's age
    raw = json.loads((out / 'status.json').read_text())
    (out / 'status.json').write_text(json.dumps(dict(raw, host='another-host.example')))
    st = Run(out).status
    assert st['status'] == 'running' and st['heartbeat_age'] >= 0, st
    assert snap(d) == before


# 4. tokens continue across resume; 5. a damaged state.pt ------------------------------------------------------------

def test_tokens_continue_across_resume(interrupted, tmp_path):
    "Interrupted at step 2 and resumed: the final 'train' row's tokens equal an uninterrupted run's."
    d, before, part_dir = _copy_interrupted(interrupted, tmp_path)
    full = finetune(str(d), 'sort', 'full', tmp_path / 'full', **RESUMABLE)
    part = finetune(str(d), 'sort', 'full', part_dir, resume=True, **RESUMABLE)
    assert part.status['status'] == 'done'
    t_full, t_part = full.log.iloc[-1], part.log.iloc[-1]
    assert int(t_part.step) == int(t_full.step) == 4
    assert int(t_part.tokens) == int(t_full.tokens) > 0, (part.log, full.log)
    assert all(torch.equal(part.weights()[k], full.weights()[k]) for k in full.weights())    # resume stays bit-identical
    assert snap(d) == before


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'empty'])
def test_damaged_state_pt_refuses_resume_clearly(interrupted, tmp_path, damage):
    "A truncated, garbage or empty state.pt on resume: FtlabError naming the file and the fix; the run dir unchanged."
    d, before, out = _copy_interrupted(interrupted, tmp_path)
    sp = out / 'state.pt'
    data = sp.read_bytes()
    sp.write_bytes(dict(truncated=data[:len(data) // 2], garbage=os.urandom(4096), empty=b'')[damage])
    run_before = snap(out)
    with pytest.raises(FtlabError) as e:
        finetune(str(d), 'sort', 'full', out, resume=True, **RESUMABLE)
    msg = str(e.value)
    assert str(sp) in msg and 'resume=True cannot continue' in msg and 'overwrite=True' in msg, msg
    assert snap(out) == run_before and snap(d) == before


# 6. One damaged file never hides the other runs --------------------------------------------------------------------

def test_runs_survive_damaged_files(base, tmp_path):
    "A bad metrics.jsonl line is skipped with a warning naming file and line; a run with an unreadable config is left out, warned."
    d, _ = base
    root = tmp_path / 'runs'
    good = finetune(str(d), 'sort', 'full', root / 'good', **dict(SMALL, eval_every=2))
    for name in ('cut', 'badcfg', 'badstatus'): shutil.copytree(good.path, root / name)
    lines = (root / 'cut' / 'metrics.jsonl').read_text().splitlines()
    lines.insert(1, '{"kind": "eval", "step": 2, "task_a')        # a line cut mid-write, among good ones
    (root / 'cut' / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
    (root / 'badcfg' / 'run_config.json').write_text('{"base": ')
    (root / 'badstatus' / 'status.json').write_bytes(b'\x00\xff garbage')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        table = runs(root)
    said = [str(w.message) for w in caught]
    assert any(f'{root / "cut" / "metrics.jsonl"}, line 2' in s for s in said), said
    assert any(str(root / 'badcfg') in s and 'left out' in s and 'run_config.json' in s for s in said), said
    assert sorted(table.run) == ['badstatus', 'cut', 'good'], table
    t = table.set_index('run')
    assert t.status['badstatus'] == 'unknown' and t.status['good'] == 'done'
    assert t.task_acc['cut'] == t.task_acc['good']           # the good rows of the damaged file still count
    with warnings.catch_warnings(record=True):
        warnings.simplefilter('always')
        assert Run(root / 'cut').metrics.step.tolist() == good.metrics.step.tolist()
    with pytest.raises(FtlabError, match='run_config.json cannot be read'):
        Run(root / 'badcfg').config
