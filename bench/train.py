"""Training-throughput benchmark: `ftlab.train.finetune` against a plain PyTorch loop, in the same run.

What it measures
  Both sides fine-tune the zoo base (`llama`, full fine-tuning, AdamW, loss on the answer tokens) on the
  same task for the same number of optimiser steps, with the same threads (OMP_WAIT_POLICY=ACTIVE is set
  before torch is imported, as the zoo notes advise).
  - ftlab: `finetune(...)` with whole examples packed into `--rows` rows of `--seq-len` tokens;
    tokens and seconds come from the run's own log (`train_seconds` counts only forward, backward and the
    optimiser step; evaluation and checkpoints are excluded).
  - reference: the loop a researcher writes first: each step takes `--batch` examples, pads them to the
    longest in the batch (attention mask, labels −100 on prompt and padding), forward, backward, AdamW step.
    Timed the same way (forward + backward + step).
  Prints real (non-padding) tokens per second of each, the share of slots that are padding, and the
  ratio ftlab / reference (target: >= 1). The reference's batch (default 160 `sort` examples of ~12 tokens)
  holds about as many real tokens as ftlab's 16x128 packed rows, so both take steps of similar work.
  Exits 0 either way.

Run:  .venv/bin/python bench/train.py [--task sort] [--steps 60] [--threads 2]
"""
from __future__ import annotations
import argparse, os, sys, tempfile, time
os.environ.setdefault('OMP_WAIT_POLICY', 'ACTIVE')
from pathlib import Path

def reference(task:str, steps:int, batch:int, lr:float, seed:int=0) -> dict:
    "Plain PyTorch: padded batches of single examples, AdamW; returns real tokens, padded slots, seconds."
    import numpy as np, torch
    from ftlab.zoo import load
    from ftlab.tasks import get_task
    from ftlab.evaluate import encode
    model, tok = load('llama'); model.train()
    df = get_task(task).sample(8192, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    real = slots = 0; secs = 0.0
    for _ in range(steps):
        rows = []
        for i in rng.integers(0, len(df), batch):
            ids, n = encode(tok, df.prompt[i], df.answer[i]); ids = ids + [tok.eos_token_id]
            rows.append((ids, [-100] * n + ids[n:]))
        L = max(len(x) for x, _ in rows)
        ids = torch.full((batch, L), tok.pad_token_id, dtype=torch.long); labels = torch.full((batch, L), -100)
        mask = torch.zeros((batch, L), dtype=torch.long)
        for j, (x, y) in enumerate(rows):
            ids[j, :len(x)] = torch.tensor(x); labels[j, :len(x)] = torch.tensor(y); mask[j, :len(x)] = 1
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        secs += time.perf_counter() - t0
        real += int(mask.sum()); slots += mask.numel()
    return dict(tokens=real, slots=slots, seconds=secs)

def ftlab_run(task:str, steps:int, rows:int, seq_len:int, lr:float, threads:int) -> dict:
    from ftlab.train import finetune
    with tempfile.TemporaryDirectory() as d:
        run = finetune('llama', task, 'full', Path(d) / 'run', steps=steps, batch_size=rows, seq_len=seq_len, lr=lr,
                       eval_every=0, save_every=0, n_eval=16, progress=False, threads=threads)
        last = run.log.iloc[-1]
    return dict(tokens=int(last.tokens), slots=steps * rows * seq_len, seconds=float(last.train_seconds))

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--task', default='sort'); p.add_argument('--steps', type=int, default=60)
    p.add_argument('--rows', type=int, default=16); p.add_argument('--seq-len', type=int, default=128)
    p.add_argument('--batch', type=int, default=160, help='examples per step of the reference loop')
    p.add_argument('--lr', type=float, default=3e-4); p.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    ref = reference(a.task, a.steps, a.batch, a.lr)
    ft = ftlab_run(a.task, a.steps, a.rows, a.seq_len, a.lr, a.threads)
    print(f'task {a.task}, {a.steps} steps, {a.threads} threads, zoo llama, full fine-tuning')
    for name, r in [('reference (padded batches)', ref), ('ftlab (packed rows)', ft)]:
        print(f'{name:28s} {r["tokens"] / r["seconds"]:9,.0f} real tokens/s   {r["tokens"]:8,} tokens in '
              f'{r["seconds"]:6.1f} s   padding {1 - r["tokens"] / r["slots"]:5.1%} of slots')
    ratio = (ft['tokens'] / ft['seconds']) / (ref['tokens'] / ref['seconds'])
    print(f'ratio ftlab / reference: {ratio:.2f}x  (target >= 1)')

if __name__ == '__main__': main()
