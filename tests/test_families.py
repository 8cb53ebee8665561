"""A model type ftlab has no `Family` record for: read with LLaMA's layout when its parameters have it (every pillar
runs on it), otherwise refused with the reason before anything is written."""
from pathlib import Path
import pytest, torch
from transformers import AutoModelForCausalLM, GraniteConfig, PhiConfig

from ftlab.zoo import make_tokenizer
from ftlab.weights import FAMILIES

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)

def save(tmp, name, cfg):
    tok = make_tokenizer()
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg(vocab_size=len(tok), bos_token_id=1, eos_token_id=2, pad_token_id=0, **SIZES))
    d = tmp / name; m.save_pretrained(d); tok.save_pretrained(d)
    return str(d)

@pytest.fixture(scope='module')
def granite(tmp_path_factory):
    FAMILIES.pop('granite', None)            # adopted on first sight, in this process
    return save(tmp_path_factory.mktemp('granite'), 'granite', lambda **k: GraniteConfig(num_key_value_heads=2, **k))

def test_every_pillar_on_a_llama_like_type(granite, tmp_path):
    from ftlab.train import finetune
    from ftlab.spectral import intruders, delta_rank
    from ftlab.localize import graft
    from ftlab.patching import act_patch, query_pairs
    from ftlab.merge import merge
    from ftlab.sources import load
    kw = dict(steps=3, eval_every=3, n_eval=8, n_train=64, batch_size=4, seq_len=64, progress=False, forget_tasks=('copy',))
    lora = finetune(granite, 'sort', 'lora', tmp_path / 'lora', **kw)
    full = finetune(granite, 'sort', 'full', tmp_path / 'full', **kw)
    assert FAMILIES['granite'].qkv == FAMILIES['llama'].qkv
    assert lora.status['status'] == full.status['status'] == 'done'
    r = intruders((granite, lora), cache=False, progress=False)
    assert len(r.per_matrix) == 2 * 7 and r.errors.empty
    assert len(delta_rank((granite, full), cache=False, progress=False)) == 14
    assert graft((granite, full), 'sort', sparsity=1e-2, steps=1, n_train=16, n_val=16, progress=False).count > 0
    model, tok = load(granite)
    p = act_patch(model, tok, *query_pairs('kv', 4), component='attn_out')
    assert set(p.layer) == {0, 1} and p.score.notna().all()
    out = merge(granite, [full.checkpoint()], 'ties', out=tmp_path / 'merged', density=0.5)
    assert (out / 'config.json').exists()

def test_an_unreadable_type_is_refused_before_any_side_effect(tmp_path):
    from ftlab.train import finetune
    from ftlab.spectral import intruders
    from ftlab.core import FtlabError
    phi = save(tmp_path, 'phi', PhiConfig)
    with pytest.raises(FtlabError, match=r"Unsupported architecture 'phi' \(its parameters .*fc1.* have no place in the LLaMA layout\)"):
        finetune(phi, 'sort', 'lora', tmp_path / 'run', steps=2, progress=False)
    assert not (tmp_path / 'run').exists()
    with pytest.raises(NotImplementedError, match='no place in the LLaMA layout'):
        intruders((phi, phi), cache=False, progress=False)
