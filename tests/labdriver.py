"""JupyterLab in a real browser for ftlab's browser tests and bench/widgets.py.

`Lab` starts JupyterLab from this Python on 127.0.0.1 (a free port, a random token, settings, workspaces and
runtime files in a temporary directory) and drives headless Chromium with Playwright (Debian's `chromium`:
Playwright's own browser download is not used). `Lab.open(nb)` opens a notebook in a fresh kernel;
`Notebook.run_all()`, `Notebook.plots(css)` and `Notebook.wait_drawn(css)` read what the widgets drew, from the
plotly graph divs in the page (`gd.data` and the SVG traces), not from the kernel.
"""
from __future__ import annotations
import json, os, secrets, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

CHROMIUM = os.environ.get('FTLAB_CHROMIUM', '/usr/bin/chromium')

def missing() -> str | None:
    "Why the browser tests cannot run here, or None."
    try: import playwright, jupyterlab  # noqa: F401
    except ImportError as e: return f'{e.name} is not installed (make setup installs it from constraints.txt)'
    if not Path(CHROMIUM).exists(): return f'no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does it)'
    return None

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

# JS: every plotly graph div under `css`, with how many traces it holds and how many points they have, and
# how many trace groups the SVG drew (a figure with traces but no points, or no SVG traces, is empty axes).
PLOTS_JS = """css => [...document.querySelectorAll(css + ' .js-plotly-plot')].map(gd => {
  const pts = (gd.data || []).map(t => Math.max(...['x', 'y', 'z', 'values'].map(k =>
      t[k] == null ? 0 : (t[k].length ?? (t[k].bdata ? 1 : 0)))));
  return {traces: (gd.data || []).length, points: pts.reduce((a, b) => a + b, 0),
          svg_traces: gd.querySelectorAll('g.trace, g.imagelayer image, g.hm image').length,
          title: (gd.layout && gd.layout.title && (gd.layout.title.text ?? gd.layout.title)) || '',
          key: JSON.stringify([(gd.data || []).map(t => [t.name, t.x, t.y, t.z]), gd.layout && gd.layout.title]),
          width: gd.getBoundingClientRect().width};
})"""

class Notebook:
    "A notebook open in JupyterLab (one page, its own kernel)."
    def __init__(self, lab:'Lab', page, path:str): self.lab, self.page, self.path = lab, page, path

    def js(self, expr:str, arg=None): return self.page.evaluate(expr, arg)

    def wait_kernel(self, timeout:float=120):
        "Wait until the notebook's kernel is started and idle."
        self.page.wait_for_function("""() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return !!k && k.status === 'idle' && k.connectionStatus === 'connected'; }""", timeout=timeout * 1000)

    def run_all(self):
        "Run all cells (as the Run menu's Run All Cells); returns at once."
        self.js("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

    def done(self) -> bool:
        "True when the kernel is idle and the last code cell ran as the n-th execution (Run All in a fresh kernel)."
        return self.js("""() => { const w = window.jupyterapp.shell.currentWidget;
            const cells = w.content.widgets.filter(c => c.model.type === 'code');
            return w.sessionContext.session.kernel.status === 'idle' && cells.length > 0 &&
                   cells[cells.length - 1].model.executionCount === cells.length; }""")

    def errors(self) -> list[str]:
        "Error outputs of the notebook's cells (their ename: evalue)."
        return self.js("""() => window.jupyterapp.shell.currentWidget.content.widgets.flatMap(c =>
            c.model.type !== 'code' ? [] : [...Array(c.model.outputs.length).keys()].map(i => c.model.outputs.get(i).toJSON())
              .filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue))""")

    def wait_done(self, timeout:float=600, poll:float=0.5):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.done(): return time.time() - t0
            errs = self.errors()
            if errs: raise AssertionError(f'{self.path}: a cell raised {errs[0]}')
            time.sleep(poll)
        raise TimeoutError(f'{self.path}: still running after {timeout:.0f} s')

    def scroll_to(self, css:str):
        "Scroll the first element matching `css` into view (a windowed notebook renders only what is near the view)."
        self.js("css => { const e = document.querySelector(css); if (e) e.scrollIntoView({block: 'center'}); return !!e; }", css)

    def plots(self, css:str) -> list[dict]:
        "The plotly figures drawn under `css`: traces, points, SVG trace groups, title, a key that changes on redraw."
        return self.js(PLOTS_JS, css)

    def wait_drawn(self, css:str, n:int=1, timeout:float=60, changed_from=None, poll:float=0.1) -> tuple[float, list[dict]]:
        """Wait until `n` plots under `css` hold data (points and SVG traces) and, with `changed_from`, differ from it.
        Returns (seconds waited, plots); on timeout returns (None, the last plots)."""
        t0, ps = time.time(), []
        while time.time() - t0 < timeout:
            self.scroll_to(css)
            ps = self.plots(css)
            full = [p for p in ps if p['points'] > 0 and p['svg_traces'] > 0]
            if len(full) >= n and (changed_from is None or [p['key'] for p in ps] != [p['key'] for p in changed_from]):
                return time.time() - t0, ps
            time.sleep(poll)
        return None, ps

    def close(self): self.page.context.close()

class Lab:
    "JupyterLab serving `root`, and a headless Chromium driven by Playwright. Use as a context manager."
    def __init__(self, root:str | Path, python:str = sys.executable, width:int=1400, height:int=1000):
        self.root, self.python, self.viewport = Path(root).resolve(), python, dict(width=width, height=height)
        self.token, self.port = secrets.token_hex(16), free_port()
        self.url = f'http://127.0.0.1:{self.port}'

    def __enter__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix='ftlab-lab-'))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(self.tmp / 'config'), JUPYTER_RUNTIME_DIR=str(self.tmp / 'runtime'),
                   JUPYTERLAB_SETTINGS_DIR=str(self.tmp / 'settings'), JUPYTERLAB_WORKSPACES_DIR=str(self.tmp / 'workspaces'),
                   HF_HUB_OFFLINE='1', PYDEVD_DISABLE_FILE_VALIDATION='1')
        self.log = open(self.tmp / 'lab.log', 'w')
        cmd = [self.python, '-m', 'jupyterlab', '--no-browser', '--allow-root', '--ServerApp.ip=127.0.0.1',
               f'--ServerApp.port={self.port}', f'--IdentityProvider.token={self.token}', f'--ServerApp.root_dir={self.root}',
               '--LabApp.expose_app_in_browser=True', '--ServerApp.port_retries=0']
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(f'{self.url}/api/status?token={self.token}', timeout=2); break
            except Exception:
                if self.proc.poll() is not None or time.time() - t0 > 60:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f'JupyterLab did not start; its log:\n{(self.tmp / "lab.log").read_text()[-3000:]}')
                time.sleep(0.3)
        from playwright.sync_api import sync_playwright
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=['--no-sandbox'])
        return self

    def open(self, path:str, timeout:float=120, cpu_slowdown:float=1) -> Notebook:
        """Open notebook `path` (relative to root) in a new page: a fresh kernel starts for it.
        `cpu_slowdown` > 1 throttles the page's CPU (Chrome's devtools emulation), as a busy laptop would."""
        # a new browser context per notebook: nothing cached, as a user's first visit (the widget bundles load cold)
        page = self.browser.new_context(viewport=self.viewport).new_page()
        if cpu_slowdown > 1: page.context.new_cdp_session(page).send('Emulation.setCPUThrottlingRate', {'rate': cpu_slowdown})
        page.goto(f'{self.url}/lab/tree/{path}?token={self.token}&reset', timeout=timeout * 1000)
        nb = Notebook(self, page, path)
        page.wait_for_function('() => window.jupyterapp && window.jupyterapp.shell.currentWidget', timeout=timeout * 1000)
        # a notebook without kernelspec metadata asks which kernel: take the default one
        if page.locator('.jp-Dialog .jp-mod-accept').count(): page.locator('.jp-Dialog .jp-mod-accept').first.click()
        nb.wait_kernel(timeout)
        return nb

    def shutdown_kernels(self):
        "Stop every kernel (each `open` then starts a fresh one)."
        req = lambda m, p: urllib.request.urlopen(urllib.request.Request(f'{self.url}{p}?token={self.token}', method=m), timeout=30)
        for k in json.load(req('GET', '/api/sessions')): req('DELETE', f"/api/sessions/{k['id']}")

    def __exit__(self, *exc):
        for close in (lambda: self.browser.close(), lambda: self.pw.stop()):
            try: close()
            except Exception: pass
        if getattr(self, 'proc', None) is not None and self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(20)
            except subprocess.TimeoutExpired: self.proc.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
