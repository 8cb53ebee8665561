"ftlab.patching against plain PyTorch hook loops on random tiny GPT-2, Llama and GPT-NeoX models."
import copy
import numpy as np, pandas as pd, pytest, torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, GPTNeoXConfig
from ftlab.tasks import make_tokenizer
from ftlab.arch import arch
from ftlab.patching import (act_patch, attr_patch, path_patch, cmap, faithfulness, tuco, entity_pairs, prompts,
                            PatchError)

TOK = make_tokenizer()
V = len(TOK)

def _model(family, seed=0):
    # a wide initialisation (std 0.3) so that patches move the metric well above float noise
    small = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 initializer_range=0.3)
    cfg = {'gpt2': GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.3),
           'llama': LlamaConfig(num_key_value_heads=2, max_position_embeddings=64, **small),
           'gpt_neox': GPTNeoXConfig(max_position_embeddings=64, **small)}[family]
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()

def _blocks(m):
    return {'gpt2': lambda: m.transformer.h, 'llama': lambda: m.model.layers, 'gpt_neox': lambda: m.gpt_neox.layers}[
        arch(m).family]()

FAMILIES = ['gpt2', 'llama', 'gpt_neox']
CLEAN, CORRUPT = entity_pairs(6, 3, seed=0)

def _hidden(a, kw): return a[0] if a else kw['hidden_states']

def plain_resid_loop(m, P):
    "One forward pass per (layer, position), written with raw register_forward_pre_hook: the serial reference."
    acts, out = {}, []
    blocks = list(_blocks(m))
    hs = [b.register_forward_pre_hook(lambda mod, a, kw, l=l: acts.__setitem__(l, _hidden(a, kw).clone()),
                                      with_kwargs=True) for l, b in enumerate(blocks)]
    with torch.no_grad(): m(input_ids=P.clean)
    for h in hs: h.remove()
    for l, b in enumerate(blocks):
        for p in range(P.clean.shape[1]):
            def pre(mod, a, kw, l=l, p=p):
                x = _hidden(a, kw).clone(); x[:, p] = acts[l][:, p]
                return ((x,) + a[1:], kw) if a else (a, {**kw, 'hidden_states': x})
            h = b.register_forward_pre_hook(pre, with_kwargs=True)
            with torch.no_grad(): lg = m(input_ids=P.corrupt).logits[:, -1]
            h.remove()
            out.append((lg.gather(1, P.ans[:, None]) - lg.gather(1, P.corrupt_ans[:, None])).mean().item())
    return np.array(out)

@pytest.mark.parametrize('family', FAMILIES)
def test_act_patch_resid_equals_plain_hook_loop(family):
    m = _model(family)
    P = prompts(TOK, CLEAN, CORRUPT)
    r = act_patch(m, TOK, CLEAN, CORRUPT, 'resid_pre', budget_mb=0.5)   # small budget: several chunks
    ref = plain_resid_loop(m, P)
    assert len(r) == len(ref) == 2 * P.clean.shape[1]
    np.testing.assert_allclose(r.value.values, ref, atol=1e-4)
    assert r.value.max() - r.value.min() > 0.1, 'the patches must differ for this to test anything'

@pytest.mark.parametrize('family', FAMILIES)
def test_head_out_patch_equals_attention_output_by_hand(family):
    "Patching one head's output: the attention output equals o_proj applied to the head outputs with that slice replaced."
    from ftlab.arch import cache, hooks
    m = _model(family); a = arch(m)
    P = prompts(TOK, CLEAN, CORRUPT)
    new = torch.randn(P.clean.shape[0], P.clean.shape[1], a.d_head)
    def put(x): x = x.clone(); x[:, :, 1] = new; return x
    heads = cache(m, ['head_out.1'], input_ids=P.clean)['head_out.1'].clone()
    with hooks(m, {'head_out.1': put}):
        got = cache(m, ['attn_out.1'], input_ids=P.clean)['attn_out.1']
    heads[:, :, 1] = new
    o = m.get_submodule(f'{a.blocks}.1.{a.o_proj}')
    W = o.weight.T if type(o).__name__ == 'Conv1D' else o.weight      # GPT-2's Conv1D stores [in, out]
    by_hand = heads.flatten(2) @ W.T + (o.bias if o.bias is not None else 0)
    torch.testing.assert_close(got, by_hand, atol=1e-5, rtol=1e-5)

@pytest.mark.parametrize('family', FAMILIES)
def test_batched_equals_serial_for_every_component_and_position(family):
    "The batched path (positions > 0 from the own run's KV cache, blocks below the patched layer skipped) equals one full forward pass per variant."
    m = _model(family)
    for comp in ('resid_pre', 'attn_out', 'mlp_out', 'head_out', 'q', 'k', 'v'):
        b = act_patch(m, TOK, CLEAN, CORRUPT, comp, per_position=True, budget_mb=4, reuse_prefix=True)
        s = act_patch(m, TOK, CLEAN, CORRUPT, comp, per_position=True, batched=False)
        assert b.position.nunique() > 5
        np.testing.assert_allclose(b.value.values, s.value.values, atol=1e-4, err_msg=f'{family} {comp}')
    for comp in ('head_out', 'q', 'k', 'v'):          # all positions at once: the own run below the layer is reused
        b = act_patch(m, TOK, CLEAN, CORRUPT, comp, budget_mb=0.05, reuse_prefix=True)
        s = act_patch(m, TOK, CLEAN, CORRUPT, comp, batched=False)
        assert b.layer.nunique() == 2
        np.testing.assert_allclose(b.value.values, s.value.values, atol=1e-4, err_msg=f'{family} {comp} all positions')

@pytest.mark.parametrize('family', FAMILIES)
def test_cmap_identical_models_is_a_no_op(family):
    m = _model(family)
    twin = copy.deepcopy(m)
    groups = {'heads': [f'head_out.{l}' for l in range(2)], 'mlp': 'mlp_out.1', 'q': [('q.1', [0, 3])]}
    r = cmap(m, twin, TOK, CLEAN, groups, metric='logit')
    np.testing.assert_allclose(r.value.values, r.target.values, atol=1e-5)

def test_cmap_different_architectures_named():
    with pytest.raises(PatchError, match='family: gpt2 vs llama'):
        cmap(_model('gpt2'), _model('llama'), TOK, CLEAN, {'x': 'mlp_out.0'})
    deeper = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64,
                                                          num_hidden_layers=3, num_attention_heads=4,
                                                          num_key_value_heads=2))
    with pytest.raises(PatchError, match='n_layers: 2 vs 3'):
        cmap(_model('llama'), deeper, TOK, CLEAN, {'x': 'mlp_out.0'})

def test_bad_inputs_have_clear_errors():
    m = _model('llama')
    with pytest.raises(PatchError, match='Valid: resid_pre, attn_out, mlp_out, head_out, q, k, v'):
        act_patch(m, TOK, CLEAN, CORRUPT, 'attn')
    ragged = pd.DataFrame(dict(prompt=['copy : a b ->', 'copy : a b c ->'], answer=['a b', 'a b c']))
    with pytest.raises(PatchError, match='one length'):
        act_patch(m, TOK, ragged, ragged)
    with pytest.raises(PatchError, match='as many tokens as its clean one'):
        act_patch(m, TOK, CLEAN, entity_pairs(6, 4, seed=0)[1])
    with pytest.raises(PatchError, match='Unknown metric'):
        act_patch(m, TOK, CLEAN, CORRUPT, metric='f1')
    with pytest.raises(PatchError, match='outside the model'):
        path_patch(m, TOK, CLEAN, CORRUPT, receivers=[('v', 1, 5)])

def test_hooks_removed_on_error():
    m = _model('llama')
    calls = []
    def boom(logits, ans, cans):        # fails on its 2nd call: the one made inside the hooked forward pass
        calls.append(1)
        if len(calls) == 2: raise RuntimeError('metric failed')
        return logits[..., 0]
    with pytest.raises(RuntimeError, match='metric failed'):
        attr_patch(m, TOK, CLEAN, CORRUPT, metric=boom)
    n_hooks = sum(len(mod._forward_pre_hooks) + len(mod._forward_hooks) for mod in m.modules())
    assert n_hooks == 0

def test_attribution_tracks_activation_patching():
    m = _model('llama')
    from ftlab.patching import agreement
    ag = agreement(act_patch(m, TOK, CLEAN, CORRUPT), attr_patch(m, TOK, CLEAN, CORRUPT))
    assert ag['pearson'] > 0.8, ag

def test_tuco_and_faithfulness_limits():
    m = _model('llama')
    assert np.allclose(tuco(m, copy.deepcopy(m), TOK, CLEAN).tuco, 0, atol=1e-6)
    f = faithfulness(m, TOK, CLEAN, [(l, h) for l in range(2) for h in range(4)])
    assert f['circuit'] == f['full']
