"""Training on accelerate with two processes (gloo, on CPU) matches one process.

`accelerate launch --multi_gpu --num_processes 2` starts two processes through torch.distributed; on a machine
without GPUs, and with `--device cpu`, they train on CPU over gloo. (`accelerate launch --cpu --num_processes 2`
starts a single process in accelerate 1.15: its simple launcher ignores --num_processes without mpirun.)

Every process builds the same batch of a step and trains on its share of the rows (`ftlab.train.train_step`), so the
losses and evaluations of a 2-process run equal those of a 1-process run up to float rounding.
"""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ARGS = ['--base', 'llama', '--task', 'sort', '--method', 'lora', '--steps', '12', '--eval-every', '6', '--n-eval', '16',
        '--n-train', '512', '--batch-size', '8', '--seq-len', '64']

def rows(run, kind): return [r for r in map(json.loads, (run / 'metrics.jsonl').read_text().splitlines()) if r['kind'] == kind]

def test_two_processes_match_one(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    one = subprocess.run([str(BIN / 'ftlab'), 'train', *ARGS, '--out', str(tmp_path / 'one'), '--device', 'cpu'],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([str(BIN / 'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                          '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'ftlab.cli', 'train', *ARGS,
                          '--device', 'cpu', '--out', str(tmp_path / 'two')],
                         env=dict(env, CUDA_VISIBLE_DEVICES=''), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count('Run written to') == 1, 'only the main process reports'
    t1, t2 = rows(tmp_path / 'one', 'train'), rows(tmp_path / 'two', 'train')
    assert {r['processes'] for r in t1} == {1} and {r['processes'] for r in t2} == {2}, (t1, t2)
    assert [r['step'] for r in t2] == [10, 12] and [r['tokens'] for r in t1] == [r['tokens'] for r in t2]
    for a, b in zip(t1, t2): assert b['loss'] == pytest.approx(a['loss'], rel=1e-4), (a, b)
    e1, e2 = rows(tmp_path / 'one', 'eval'), rows(tmp_path / 'two', 'eval')
    assert [r['step'] for r in e2] == [0, 6, 12]
    assert e2[-1]['task_loss'] != e2[0]['task_loss'], 'the 2-process run did not train'
    for a, b in zip(e1, e2):
        for k in ('task_loss', 'lm_loss'): assert b[k] == pytest.approx(a[k], rel=1e-3), (k, a, b)
        for k in ('task_acc', 'pre_acc'): assert abs(b[k] - a[k]) <= 1 / 16, (k, a, b)
    ck = sorted(p.name for p in (tmp_path / 'two' / 'checkpoints').iterdir())
    assert ck == ['step-000006', 'step-000012'] and not list((tmp_path / 'two').glob('*.tmp'))
