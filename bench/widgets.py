"""Widgets in the browser: for each widget of the getting-started notebook, the time from running its cell to a
drawn plot, and from one interaction to the first feedback (a progress bar or the redraw) and to the redraw,
measured in JupyterLab with headless Chromium (tests/labdriver.py).

    python bench/widgets.py [--cpu-slowdown 1]

Cells run one at a time in a fresh kernel (as Shift+Enter would), so each widget's time is its own. The
reference, measured in the same run, is the time until the cell is reported done (the kernel's work): the ratio
'drawn ÷ done' is over 1 when the browser shows the plot only after the kernel finished, under 1 when the plot is
on screen while the cell still runs (the live plot). The target: feedback within 1 s of every interaction.
"""
import argparse, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tests'))
from labdriver import Lab, missing                       # noqa: E402
from test_browser import WIDGETS, check_interaction, GETTING_STARTED   # noqa: E402

# what in a cell's source says which widget it shows
MARKERS = {'live=True': 'liveplot', 'intruder_widget(': 'intruders', 'merge_widget(': 'merge', 'graft_widget(': 'graft',
           'patch_widget(': 'patch'}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cpu-slowdown', type=float, default=1, help="throttle the page's CPU (Chrome devtools emulation)")
    a = ap.parse_args()
    why = missing()
    if why: sys.exit(f'bench/widgets.py: {why}')
    root = Path(tempfile.mkdtemp(prefix='ftlab-bench-widgets-'))
    shutil.copy(GETTING_STARTED, root / 'gs.ipynb')
    rows = []
    with Lab(root) as lab:
        nb = lab.open('gs.ipynb', cpu_slowdown=a.cpu_slowdown)
        n = nb.js("() => window.jupyterapp.shell.currentWidget.content.widgets.length")
        t_all = time.time()
        for i in range(n):
            src = nb.js("i => window.jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel.getSource()", i)
            kind = nb.js("i => window.jupyterapp.shell.currentWidget.content.widgets[i].model.type", i)
            if kind != 'code': continue
            widget = next((w for k, w in MARKERS.items() if k in src), None)
            t0 = time.time()
            nb.js("""i => { const p = window.jupyterapp.shell.currentWidget; p.content.activeCellIndex = i;
                            window.jupyterapp.commands.execute('notebook:run-cell'); }""", i)
            drawn = None
            if widget:
                drawn, _ = nb.wait_drawn(f'.ftlab-{widget}', n=WIDGETS[widget], timeout=600)
            while not nb.js("i => { const c = window.jupyterapp.shell.currentWidget.content.widgets[i]; "
                            "return c.model.executionCount != null && !c.promptNode.textContent.includes('*'); }", i):
                errs = nb.errors()
                if errs: sys.exit(f'cell {i} raised {errs[0]}')
                time.sleep(0.05)
            done = time.time() - t0
            if widget:
                if drawn is None: sys.exit(f'the {widget} widget drew nothing in 600 s')
                row = dict(widget=widget, cell_s=done, drawn_s=drawn)
                if widget != 'liveplot':
                    nb.scroll_to(f'.ftlab-{widget}')
                    res = check_interaction(nb, widget)
                    row.update(feedback_s=res['feedback'], redraw_s=res['redraw'])
                rows.append(row)
        total = time.time() - t_all
        nb.close()
    print(f'getting-started notebook, cell by cell in a fresh kernel: {total:.0f} s in all (cpu slowdown {a.cpu_slowdown:g})')
    print(f'{"widget":10} {"cell run → drawn":>17} {"cell done":>10} {"drawn ÷ done":>13} {"interaction → feedback":>23} {"→ redraw":>9}')
    worst = 0.0
    for r in rows:
        fb = r.get('feedback_s'); worst = max(worst, fb or 0)
        fbs = '' if fb is None else f'{fb:.2f}s'
        rds = '' if 'redraw_s' not in r else f'{r["redraw_s"]:.1f}s'
        print(f'{r["widget"]:10} {r["drawn_s"]:16.1f}s {r["cell_s"]:9.1f}s {r["drawn_s"] / r["cell_s"]:13.2f} {fbs:>23} {rds:>9}')
    print(f'longest wait for feedback after an interaction: {worst:.2f} s (target ≤ 1 s)')

if __name__ == '__main__': main()
