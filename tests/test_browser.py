"""ftlab's widgets where users live: JupyterLab in a real browser (headless Chromium, driven by Playwright).

What is checked is what the page shows: plotly graph divs with traces that have points and SVG trace groups,
not the kernel's idea of the figure. Needs `jupyterlab` and `playwright` (make setup) and Debian's `chromium`
(.ci/run installs it). Without them these tests are skipped, unless FTLAB_BROWSER_TESTS=require (as in CI),
where a missing browser is a failure.
"""
import os, shutil, time
from pathlib import Path
import nbformat, pytest
from labdriver import Lab, missing

ROOT = Path(__file__).resolve().parent.parent
GETTING_STARTED = ROOT / 'nbs' / 'tutorials' / 'getting_started.ipynb'
# each widget of the getting-started notebook: its Panel class, and how many of its plots must hold data
WIDGETS = {'liveplot': 1, 'intruders': 3, 'merge': 2, 'graft': 2, 'patch': 3}
REQUIRED = os.environ.get('FTLAB_BROWSER_TESTS') == 'require'
WHY = missing()
pytestmark = pytest.mark.skipif(WHY is not None and not REQUIRED, reason=f'browser tests skipped: {WHY}')

# A notebook of cheap widgets, built the way ftlab's widgets are (figure_widget + show_figure inside a Panel),
# for the first-render check in several fresh kernels: the figures are filled before the panel is displayed.
FIRST_RENDER = ['''
import plotly.graph_objects as go
from ftlab.display import figure_widget, show_figure, Panel, Status
''', '''
a, b, st = figure_widget(), figure_widget(), Status()
show_figure(a, go.Figure(go.Scatter(y=[1, 3, 2])))
show_figure(b, go.Figure(go.Bar(x=['x', 'y'], y=[2, 1])))
st.done('ready')
Panel('first', [st, a, b], status=st)
''', '''
c = figure_widget(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])))
Panel('second', [c])
''']

def write_nb(path:Path, cells:list[str]):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.strip()) for c in cells]
    nb.metadata['kernelspec'] = dict(name='python3', display_name='Python 3', language='python')
    nbformat.write(nb, path)

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    if WHY is not None: pytest.fail(f'FTLAB_BROWSER_TESTS=require, but {WHY}')
    root = tmp_path_factory.mktemp('lab')
    shutil.copy(GETTING_STARTED, root / 'getting_started.ipynb')
    write_nb(root / 'first_render.ipynb', FIRST_RENDER)
    with Lab(root) as lab: yield lab

def summary(plots): return [(p['traces'], p['points'], p['svg_traces']) for p in plots]

def test_widgets_draw_on_first_render_in_fresh_kernels(lab):
    "Figures filled before display draw in every fresh kernel (several, so a 1-in-3 failure cannot pass), and again after a page reload."
    for i in range(3):
        name = f'first_render_{i}.ipynb'
        shutil.copy(lab.root / 'first_render.ipynb', lab.root / name)
        nb = lab.open(name)
        try:
            nb.run_all(); nb.wait_done(120)
            for css, n in (('.ftlab-first', 2), ('.ftlab-second', 1)):
                dt, plots = nb.wait_drawn(css, n=n, timeout=30)
                assert dt is not None, f'kernel {i}: {css} drew {summary(plots)}'
            if i == 0:   # a view made later (reload, second tab) draws from the kernel's state, not from deltas it never saw
                nb.js("() => window.jupyterapp.commands.execute('docmanager:save')"); time.sleep(1)
                nb.page.reload(); nb.wait_kernel()
                for css, n in (('.ftlab-first', 2), ('.ftlab-second', 1)):
                    dt, plots = nb.wait_drawn(css, n=n, timeout=30)
                    assert dt is not None, f'after a reload: {css} drew {summary(plots)}'
        finally:
            nb.close(); lab.shutdown_kernels()

# JS: is the cell now running the one that trains with live=True?
RUNNING_LIVE = """() => window.jupyterapp.shell.currentWidget.content.widgets.some(c => c.model.type === 'code' &&
    c.promptNode.textContent.includes('*') && c.model.sharedModel.getSource().includes('live=True'))"""

def run_getting_started(lab, name:str) -> dict:
    """Run All on a copy of the getting-started notebook in a fresh kernel; check every widget drew, and that the
    live plot filled in while its cell ran. Returns the open notebook and what was seen."""
    shutil.copy(lab.root / 'getting_started.ipynb', lab.root / name)
    nb = lab.open(name)
    nb.run_all()
    live, t0 = [], time.time()
    while not nb.done():   # watch the live plot while the notebook runs
        errs = nb.errors()
        assert not errs, f'{name}: a cell raised {errs[0]}'
        ps = nb.plots('.ftlab-liveplot')
        if ps: live.append((nb.js(RUNNING_LIVE), ps[0]['points']))
        assert time.time() - t0 < 900, f'{name}: still running after 900 s'
        time.sleep(0.5)
    assert not nb.errors(), nb.errors()
    for w, n in WIDGETS.items():
        dt, plots = nb.wait_drawn(f'.ftlab-{w}', n=n, timeout=30)
        assert dt is not None, f'{name}: the {w} widget drew {summary(plots)}'
    return nb, live

def interact(nb, widget:str):
    "One interaction per widget (a dropdown or a slider key press), as a user would do it."
    sel = lambda i: nb.page.locator(f'.ftlab-{widget} select').nth(i)
    if widget == 'intruders': sel(0).select_option(label='full')          # the run
    elif widget == 'merge': sel(0).select_option(label='TIES')            # the method
    elif widget == 'patch': sel(1).select_option(label='mlp_out')         # the component
    elif widget == 'graft':                                               # the sparsity slider, one step left
        h = nb.page.locator('.ftlab-graft .noUi-handle').first
        h.focus(); nb.page.keyboard.press('ArrowLeft')
    else: raise KeyError(widget)

def check_interaction(nb, widget:str, timeout:float=120) -> dict:
    "Interact, then: feedback (a redraw or a progress bar in the widget) within 1 s, and a redraw within `timeout` s."
    nb.scroll_to(f'.ftlab-{widget}')
    before = nb.plots(f'.ftlab-{widget}')
    t0 = time.time(); interact(nb, widget)
    feedback = None
    changed = lambda now: [p['key'] for p in now] != [p['key'] for p in before]
    full = lambda now: len([p for p in now if p['points'] and p['svg_traces']]) >= WIDGETS[widget]
    while time.time() - t0 < timeout:
        now = nb.plots(f'.ftlab-{widget}')
        if feedback is None and (changed(now) or nb.page.locator(f'.ftlab-{widget} .ftlab-status progress').count()):
            feedback = time.time() - t0
        if changed(now) and full(now) and not nb.page.locator(f'.ftlab-{widget} .ftlab-status progress').count(): break
        time.sleep(0.05)
    redraw = time.time() - t0
    assert changed(now), f'{widget}: nothing redrawn after {timeout:.0f} s'
    assert full(now), f'{widget} after the interaction: {summary(now)}'
    assert feedback <= 1.5, f'{widget}: {feedback:.1f} s without a redraw or a progress indicator'
    return dict(redraw=redraw, feedback=feedback)

def test_getting_started(lab):
    "The getting-started notebook, Run All in a fresh kernel: every widget draws, the live plot fills in while training runs, one interaction per widget redraws it."
    nb, live = run_getting_started(lab, 'getting_started_run.ipynb')
    try:
        during = sorted({pts for running, pts in live if running})
        assert len(during) >= 2 and during[-1] > during[0], f'the live plot did not fill in while training ran: {live[:20]}'
        for w in ('intruders', 'merge', 'graft', 'patch'): check_interaction(nb, w)
    finally:
        nb.close(); lab.shutdown_kernels()

# Every pillar's widget on a real pretrained model (SmolLM2-135M-Instruct, built by `make smollm2`), as a user would
# write it: short fine-tunes with the live plot, intruders, a merge study, grafting and patching on BPE-aligned prompts.
SMOLLM2 = ["""
import tempfile
from pathlib import Path
from ftlab.sources import smollm2, load
from ftlab.train import finetune
from ftlab.spectral import intruders, intruder_widget
from ftlab.merge import MergeStudy, merge_widget
from ftlab.localize import graft_sweep, graft_eval, graft_widget
from ftlab.patching import query_pairs, patch_widget
base, runs = str(smollm2()), Path(tempfile.mkdtemp(prefix='ftlab-smollm2-'))
kw = dict(steps=8, eval_every=4, n_eval=8, n_train=64, batch_size=4, seq_len=96, progress=False, forget_tasks=('count',))
""", """
lora = finetune(base, 'copy', 'lora', runs / 'lora', r=8, live=True, **kw)
""", """
full = finetune(base, 'copy', 'full', runs / 'full', lr=1e-5, **kw)
rev = finetune(base, 'reverse', 'full', runs / 'rev', lr=1e-5, **kw)
intruder_widget({'lora': intruders((base, None), adapter=lora.checkpoint(), progress=False),
                 'full': intruders((base, full.checkpoint()), progress=False)})
""", """
merge_widget(MergeStudy(base, {'copy': full, 'reverse': rev}, ['copy', 'reverse'], n=16), lams=(0.5, 1.0))
""", """
masks = graft_sweep((base, full), 'copy', [1e-4, 1e-3], steps=2, n_train=16, n_val=16, progress=False)
graft_widget(graft_eval((base, full), masks, 'copy', n=16), masks, label='full fine-tune on copy')
""", """
model, tok = load(base)
patch_widget(model, tok, *query_pairs('entity', 4, tok=tok))
"""]

@pytest.mark.slow
def test_widgets_on_smollm2(lab):
    """Every pillar's widget on SmolLM2-135M-Instruct in JupyterLab: each draws, and answers one interaction (make test-all,
    after make smollm2)."""
    pytest.importorskip('gguf', reason='make smollm2 installs gguf and builds the model')
    from ftlab.sources import smollm2
    smollm2()                                                     # built once, into ftlab's cache (outside the repository)
    write_nb(lab.root / 'smollm2.ipynb', SMOLLM2)
    nb = lab.open('smollm2.ipynb')
    try:
        nb.run_all(); nb.wait_done(1200)
        assert not nb.errors(), nb.errors()
        for w, n in WIDGETS.items():
            dt, plots = nb.wait_drawn(f'.ftlab-{w}', n=n, timeout=60)
            assert dt is not None, f'SmolLM2: the {w} widget drew {summary(plots)}'
        for w in ('intruders', 'graft', 'patch', 'merge'):
            seen = check_interaction(nb, w, timeout=600)          # a merge study re-merges and evaluates a 135M model
            print(f'SmolLM2 {w}: feedback {seen["feedback"]:.2f} s, redrawn in {seen["redraw"]:.1f} s')
    finally:
        nb.close(); lab.shutdown_kernels()

@pytest.mark.slow
def test_getting_started_in_three_fresh_kernels(lab):
    "The long variant: Run All three times, each in a fresh kernel and browser context (make test-all)."
    for i in range(3):
        nb, _ = run_getting_started(lab, f'getting_started_{i}.ipynb')
        nb.close(); lab.shutdown_kernels()
