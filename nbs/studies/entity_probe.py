"""Entity-binding probe (issue 2): can a zoo-size LLaMA learn the box-object binding at all?

Trains `build_model('llama')` (width 128, 4 layers unless --hidden/--layers) on entity tracking only, one
example per row (padded, no packing), and prints the accuracy of `evaluate(model, tok, 'entity')` (2-5
boxes, the standard prompt) every 250 steps as JSON lines. Options: --boxes lo,hi (training boxes);
--mq 1 asks every box after the facts, in random order (several supervised queries per example);
--factloss 0 keeps the facts out of the loss; --annot p writes `: <object>` after each fact label in a
fraction p of the examples (those carry loss on the facts); --sep '' writes the object right after the
label. Binding hints: --aux p gives a fraction p of the examples auxiliary targets: each fact's label
position is trained to predict its object (the label 'Box C' -> key, in place of the next token ','), and with
--auxq 1 also the query label's position ('Box C' -> key, in place of 'contains'); --aux_until f stops the
hints after a fraction f of the steps. --save DIR writes the final model. At the end (or, with --eval DIR,
for a saved model and no training) it prints a `final` line: the accuracy on 1,000 standard prompts by
number of boxes, and how often a fact's label position predicts its object. Results:
nbs/studies/data/entity_probe.jsonl, discussed in nbs/11_zoo.ipynb.

Run:  OMP_WAIT_POLICY=ACTIVE .venv/bin/python nbs/studies/entity_probe.py --boxes 2,3 --factloss 0 --aux 1 --auxq 1 --aux_until 0.8 --steps 6000
"""
import sys, time, json, math, numpy as np, torch, argparse
from ftlab.tasks import OBJECTS, LABELS, _pick, get_task
from ftlab.zoo import build_model, _entity_hints
from ftlab.evaluate import evaluate
p = argparse.ArgumentParser()
p.add_argument('--steps', type=int, default=1500); p.add_argument('--mq', type=int, default=1)
p.add_argument('--boxes', default='2,5')
p.add_argument('--lr', type=float, default=3e-3); p.add_argument('--bs', type=int, default=64)
p.add_argument('--hidden', type=int, default=128); p.add_argument('--layers', type=int, default=4)
p.add_argument('--annot', type=float, default=0); p.add_argument('--sep', default=':'); p.add_argument('--factloss', type=int, default=1); p.add_argument('--tag', default='x')
p.add_argument('--save', default=''); p.add_argument('--eval', default=''); p.add_argument('--auxq', type=int, default=0); p.add_argument('--aux', type=float, default=0); p.add_argument('--aux_until', type=float, default=1.0)
a = p.parse_args()
torch.set_num_threads(2)
model, tok = build_model('llama', 0, hidden=a.hidden, layers=a.layers, heads=4, kv_heads=2, intermediate=4*a.hidden, max_positions=256)
V = tok.get_vocab(); lo, hi = map(int, a.boxes.split(','))
def example(rng, hint):
    n = int(rng.integers(lo, hi + 1)); objs, labels = _pick(rng, OBJECTS, n), _pick(rng, LABELS, n)
    ann = rng.random() < a.annot
    sep = f' {a.sep}' if a.sep else ''
    facts = ' , '.join(f'the {o} is in Box {l}' + (f'{sep} {o}' if ann else '') for o, l in zip(objs, labels))
    ids = [tok.bos_token_id] + [V[w] for w in ('T' + facts[1:] + ' .').split()]
    lab = list(ids) if (a.factloss or ann) else [-100] * len(ids)
    use_aux = a.aux > 0 and rng.random() < hint   # no draw without hints: the earlier runs replay unchanged
    if use_aux: _entity_hints(ids, lab, V)          # binding hint: each fact's label position predicts its object
    order = rng.permutation(n) if a.mq else [int(rng.integers(n))]
    for q in order:
        qi = [V[w] for w in f'Box {labels[q]} contains the'.split()]
        ids += qi; lab += [-100] * len(qi) if not a.factloss else qi
        if use_aux and a.auxq: lab[-2] = V[objs[q]]   # binding hint: the query label's position predicts the answer
        ans = [V[objs[q]], V['.']]; ids += ans; lab += ans
    ids.append(tok.eos_token_id); lab.append(tok.eos_token_id)
    return ids, lab
def batch(rng, hint):
    ex = [example(rng, hint) for _ in range(a.bs)]; L = max(len(i) for i, _ in ex)
    I = torch.zeros(a.bs, L, dtype=torch.long); Y = torch.full((a.bs, L), -100); M = torch.zeros(a.bs, L, dtype=torch.long)
    for r, (i, l) in enumerate(ex):
        I[r, :len(i)] = torch.tensor(i); Y[r, :len(l)] = torch.tensor(l); M[r, :len(i)] = 1
    return I, Y, M
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
warm = 100
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1, s / a.steps)))))
@torch.no_grad()
def final(model):
    "Accuracy by number of boxes (1,000 standard prompts) and the share of fact labels whose position predicts the object."
    model.eval(); ex = evaluate(model, tok, 'entity', n=1000, seed=11).examples
    ok = n = 0
    for pr in get_task('entity').sample(200, seed=3).prompt:
        ids = [tok.bos_token_id] + [V[w] for w in pr.split()]; lab = [-100] * len(ids); _entity_hints(ids, lab, V)
        pred = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1)
        for i, t in enumerate(lab):
            if t != -100: n += 1; ok += int(pred[i - 1] == t)
    by = {int(k): round(float(v), 3) for k, v in ex.groupby('n_items').correct.mean().items()}
    print(json.dumps(dict(tag=a.tag, args=' '.join(sys.argv[1:]), final=True, by_boxes=by, label_predicts_object=round(ok / n, 3))), flush=True)
if a.eval:
    from transformers import AutoModelForCausalLM
    final(AutoModelForCausalLM.from_pretrained(a.eval)); sys.exit()
rng = np.random.default_rng(0); t0 = time.time()
for step in range(a.steps):
    model.train(); I, Y, M = batch(rng, a.aux if step < a.aux_until * a.steps else 0.0)
    loss = model(input_ids=I, attention_mask=M, labels=Y).loss
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step(); opt.zero_grad()
    if (step + 1) % 250 == 0:
        model.eval()
        acc = {t: round(float(evaluate(model, tok, t, n=256, seed=777).summary.accuracy[0]), 3) for t in ('entity', 'entity:ood')}
        print(json.dumps(dict(tag=a.tag, args=' '.join(sys.argv[1:]), step=step + 1, loss=round(loss.item(), 3), t=round(time.time() - t0), **acc)), flush=True)
if a.save: model.save_pretrained(a.save); tok.save_pretrained(a.save)
final(model)
