"""The docs site built by nbs/_site.py (Sphinx + myst-nb + Furo; `make docs`).

Builds the site into a temporary folder, or checks an existing build: FTLAB_SITE=_site pytest tests/test_site.py.
The last tests read the site in headless Chromium (skipped without it, unless FTLAB_BROWSER_TESTS=require).
"""
import importlib, inspect, json, os, re, subprocess, sys, time
from pathlib import Path
from urllib.parse import urlsplit, unquote

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
MODULE_NBS = sorted(NBS.glob('[0-9]*.ipynb'))  # the numbered notebooks, one module each
STUDIES = sorted((NBS / 'studies').glob('*.ipynb'))
PILLAR_STUDY = {'20_train': '01_learns_less_forgets_less', '21_spectral': '02_intruder_dimensions',
                '22_merge': '03_merging', '23_localize': '04_localization', '24_patching': '05_circuits'}

sys.path.insert(0, str(NBS))
import _site  # noqa: E402  (the builder: its helpers say what an API entry is)


@pytest.fixture(scope='session')
def site(tmp_path_factory):
    if os.environ.get('FTLAB_SITE'):
        d = Path(os.environ['FTLAB_SITE'])
        d = d if d.is_absolute() else ROOT / d
        assert d.is_dir(), f'FTLAB_SITE={d} is not a folder'
        return d
    d = tmp_path_factory.mktemp('site') / '_site'
    t0 = time.time()
    r = subprocess.run([sys.executable, str(NBS / '_site.py'), '--out', str(d)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f'site build failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
    print(f'site built in {time.time() - t0:.1f}s')
    assert sorted(p.name for p in d.parent.iterdir()) == ['_site'], 'the build left files beside its output folder'
    return d


def html_pages(site): return sorted(p for p in site.rglob('*.html') if not p.name.endswith('.building'))

_soups = {}
def soup_of(path:Path) -> BeautifulSoup:
    if path not in _soups: _soups[path] = BeautifulSoup(path.read_text(encoding='utf-8'), 'html.parser')
    return _soups[path]

def page(site, nb_path) -> BeautifulSoup:
    p = site / Path(nb_path).relative_to(NBS).with_suffix('.html')
    assert p.exists(), f'no page {p.relative_to(site)} for {Path(nb_path).name}'
    return soup_of(p)

def article(soup): return soup.select_one('article[role=main]') or soup.select_one('article')

def module_of(nb_path):
    return _site.default_exp(json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells'])


def test_one_page_per_notebook(site):
    rels = _site.source_notebooks(NBS)
    assert len(rels) >= len(MODULE_NBS) + len(STUDIES) + 1
    for rel in rels: assert (site / rel.with_suffix('.html')).exists(), f'missing page {rel.with_suffix(".html")}'
    nav = soup_of(site / 'index.html').select('.sidebar-tree a.reference')
    linked = {a['href'].split('#')[0] for a in nav}
    for rel in rels:
        if rel.as_posix() != 'index.ipynb': assert rel.with_suffix('.html').as_posix() in linked, f'{rel} not in the navigation'
    git_url = re.search(r'^git_url\s*=\s*(\S+)', (ROOT / 'settings.ini').read_text(), re.M).group(1)
    for rel in rels:   # previous/next links, the repository, copy buttons, per-page contents
        s = page(site, NBS / rel)
        assert s.select('a.next-page') or s.select('a.prev-page'), f'{rel}: no previous/next links'
        assert any(a['href'].startswith(git_url) for a in s.select('a[href]')), f'{rel}: no link to the repository'
        assert s.select('script[src*="copybutton"]'), f'{rel}: no copy buttons'
        assert s.select('.toc-tree') is not None


def search_index(site) -> dict:
    js = (site / 'searchindex.js').read_text(encoding='utf-8')
    return json.loads(js[js.index('(') + 1: js.rindex(')')])

def test_search_index_holds_the_api(site):
    idx = search_index(site)
    names = {mod: {e[4] for e in es} for mod, es in idx['objects'].items()}   # [doc, type, prio, anchor, name]
    assert 'intruders' in names.get('ftlab.spectral', ()), 'ftlab.spectral.intruders is not in the search index'
    assert 'sample' in names.get('ftlab.tasks.Task', ()), 'methods are not in the search index'
    assert 'intruders' in idx['terms'] or 'intrud' in idx['terms']


@pytest.mark.parametrize('nb_path', MODULE_NBS, ids=lambda p: p.stem)
def test_api_reference_complete(site, nb_path):
    "Every public name of the module has an entry; every entry that takes parameters has their table; members too."
    mod_name = module_of(nb_path)
    assert mod_name, f'{nb_path.name} exports no module'
    mod = importlib.import_module(f'ftlab.{mod_name}')
    soup = page(site, nb_path)
    assert soup.find(id=f'module-ftlab.{mod_name}') is not None, 'no module target'
    problems = []
    def check(fq, f):
        dt = soup.find(id=fq)
        if dt is None: problems.append(f'{fq}: no entry'); return
        ps = [p.name for p in _site.parameters(f)] if callable(f) else []
        if not ps: return
        dd = dt.find_next_sibling('dd')
        tables = [t for t in dd.find_all('table') if t.find_parent('dd') is dd]
        if not tables: problems.append(f'{fq}: no parameter table'); return
        cells = {td.get_text(strip=True).lstrip('*') for td in tables[0].select('tbody tr td:first-child')}
        if set(ps) - cells: problems.append(f'{fq}: parameters missing from its table: {sorted(set(ps) - cells)}')
    for n in mod.__all__:
        obj = getattr(mod, n)
        fq = f'ftlab.{mod_name}.{n}'
        if inspect.isclass(obj):
            check(fq, obj)
            for m, kind in _site.public_members(obj):
                raw = inspect.getattr_static(obj, m)
                f = None if kind == 'property' else getattr(raw, '__func__', raw)
                check(f'{fq}.{m}', f)
        else: check(fq, obj if callable(obj) else None)
    assert not problems, '\n'.join(problems)
    text = article(soup).get_text(' ')
    assert '__main__' not in text, 'an annotation shows __main__.'


def test_links_and_anchors_resolve(site):
    "Every internal link of every page points at a file that exists, and at an id that exists there."
    ids, broken = {}, []
    def ids_of(p):
        if p not in ids: ids[p] = {e['id'] for e in soup_of(p).select('[id]')}
        return ids[p]
    n = 0
    for p in html_pages(site):
        for a in soup_of(p).select('a[href]'):
            u = urlsplit(a['href'])
            if u.scheme or u.netloc or a['href'].startswith('mailto:'): continue
            target = (p.parent / unquote(u.path)).resolve() if u.path else p
            if target.is_dir(): target = target / 'index.html'
            n += 1
            if not target.exists(): broken.append(f'{p.relative_to(site)}: {a["href"]} (no file)'); continue
            if u.fragment and target.suffix == '.html' and unquote(u.fragment) not in ids_of(target):
                broken.append(f'{p.relative_to(site)}: {a["href"]} (no anchor)')
    assert n > 1000, f'only {n} internal links: is the API reference cross-linked?'
    assert not broken, f'{len(broken)} broken links:\n' + '\n'.join(broken[:40])


def test_no_duplicate_ids(site):
    for p in html_pages(site):
        seen, dup = set(), set()
        for e in soup_of(p).select('[id]'):
            (dup if e['id'] in seen else seen).add(e['id'])
        assert not dup, f'{p.relative_to(site)}: duplicate ids {sorted(dup)[:10]}'


NOISE = [(re.compile(r'/tmp/tmp\w+'), 'a temporary path'), (re.compile(re.escape(str(ROOT))), 'the repository path'),
         (re.compile(r'\w+Warning: '), 'a warning'), (re.compile(r'\d+%\|[^|]*\|'), 'a progress bar'),
         (re.compile(r'(VBox|HBox|Panel|FigureWidget)\(children=|FigureWidget\(\{'), "a widget's text repr"),
         (re.compile(r'__main__\.'), '__main__.')]

def test_outputs_are_clean(site):
    "No output shows warnings, machine or temporary paths, progress bars or a widget's text repr."
    found = []
    for p in html_pages(site):
        for o in soup_of(p).select('div.cell_output'):
            t = o.get_text(' ')
            found += [f'{p.relative_to(site)}: {why}: …{m.group(0)}…' for rx, why in NOISE if (m := rx.search(t))]
    assert not found, '\n'.join(found[:30])


# the pages whose notebooks save a widget's output, and the class of its static copy
WIDGET_PAGES = {'21_spectral.html': 'ftlab-intruders', '22_merge.html': 'ftlab-merge', '23_localize.html': 'ftlab-graft',
                '24_patching.html': 'ftlab-patch', 'tutorials/getting_started.html': 'ftlab-liveplot'}

def test_widgets_show_their_static_copy(site):
    for name, cls in WIDGET_PAGES.items():
        static = soup_of(site / name).select(f'div.ftlab-static.{cls}')
        assert static, f'{name}: no static copy of the {cls} widget'
        assert static[0].select('div.plotly-graph-div'), f"{name}: the {cls} widget's copy has no figure"


def test_plotly_loaded_once_deferred_and_local(site):
    n_fig = 0
    for p in html_pages(site):
        s = soup_of(p)
        srcs = [x['src'] for x in s.select('script[src]')]
        ext = [x for x in srcs if x.startswith(('http:', 'https:', '//'))]
        assert not ext, f'{p.relative_to(site)}: scripts from the internet {ext}'
        plotly = s.select('script[src*="plotly.min.js"]')
        if s.select('div.plotly-graph-div'):
            n_fig += 1
            assert len(plotly) == 1, f'{p.relative_to(site)}: plotly.js loaded {len(plotly)} times'
            assert plotly[0].has_attr('defer'), f'{p.relative_to(site)}: plotly.js blocks rendering (no defer)'
            for x in s.select('script:not([src])'):
                if 'Plotly.newPlot' in x.text: assert 'DOMContentLoaded' in x.text, 'a figure drawn before plotly.js loads'
        else: assert not plotly, f'{p.relative_to(site)}: plotly.js on a page without figures'
    assert n_fig >= 8 and (site / '_static' / 'plotly.min.js').stat().st_size > 1_000_000


@pytest.mark.parametrize('nb_path', MODULE_NBS, ids=lambda p: p.stem)
def test_hidden_and_directives(site, nb_path):
    "`#| hide` cells are absent, export cells are replaced by entries, other code cells are shown without `#|` lines."
    code = '\n'.join(d.get_text() for d in article(page(site, nb_path)).select('div.cell_input pre'))
    assert not re.search(r'^\s*#\s*\|', code, re.M), 'a #| directive line is shown'
    for c in json.loads(nb_path.read_text(encoding='utf-8'))['cells']:
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        opts, body = _site.cell_options(src)
        if not body.strip(): continue
        first = body.strip().splitlines()[0].strip()
        if 'hide' in opts or 'export' in opts: assert first not in code or len(first) < 12, f'hidden or exported cell shown:\n{body[:200]}'
        elif not any(k in opts for k in ('default_exp', 'exporti', 'include')): assert first in code, f'code cell missing:\n{body[:200]}'


def test_pillars_link_their_study_and_studies_put_results_first(site):
    for pillar, study in PILLAR_STUDY.items():
        hrefs = [a['href'] for a in article(soup_of(site / f'{pillar}.html')).select('a[href]')]
        assert any(h.startswith(f'studies/{study}.html') for h in hrefs), f'{pillar} does not link its study {study}'
    for nb in STUDIES:
        soup = page(site, nb)
        slow = [c for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code' and '#| slow' in ''.join(c['source'])]
        collapsed = soup.select('div.cell.tag_hide-cell details, div.cell.tag_hide-input details')
        assert len(collapsed) >= len(slow), f'{nb.name}: {len(slow)} slow refresh cells, {len(collapsed)} collapsed'
        for d in collapsed: assert not d.has_attr('open'), f'{nb.name}: a refresh cell is expanded'


# ---------------------------------------------------------------------------- in a browser

def chromium_missing():
    try: import playwright  # noqa: F401
    except ImportError: return 'playwright is not installed (make setup)'
    exe = os.environ.get('FTLAB_CHROMIUM', '/usr/bin/chromium')
    return None if Path(exe).exists() else f'no Chromium at {exe} (apt-get install chromium; .ci/run does it)'

WHY = chromium_missing()
browser_test = pytest.mark.skipif(WHY is not None and os.environ.get('FTLAB_BROWSER_TESTS') != 'require',
                                  reason=f'browser checks skipped: {WHY}')

@pytest.fixture(scope='module')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=os.environ.get('FTLAB_CHROMIUM', '/usr/bin/chromium'), headless=True,
                               args=['--no-sandbox'])
        yield b
        b.close()

@browser_test
def test_search_lands_on_the_entry(site, browser):
    "Type `intruders` in the search box: the first hit is the spectral page's entry, and following it shows the entry."
    pg = browser.new_page()
    pg.goto((site / '22_merge.html').as_uri())
    pg.fill('input[name=q]', 'intruders'); pg.press('input[name=q]', 'Enter')
    pg.wait_for_selector('#search-results li a', timeout=20_000)
    first = pg.eval_on_selector('#search-results li a', 'a => a.getAttribute("href")')
    assert first.startswith('21_spectral.html#ftlab.spectral.'), first
    pg.click('#search-results li a >> nth=0'); pg.wait_for_load_state()
    assert pg.url.split('/')[-1].startswith('21_spectral.html#ftlab.spectral.')
    entry = 'document.getElementById(decodeURIComponent(location.hash.slice(1)))'
    pg.wait_for_function(f'(() => {{ const t = {entry}.getBoundingClientRect().top; return t >= 0 && t < 400 }})()',
                         timeout=10_000)   # Furo scrolls smoothly to the entry
    assert pg.evaluate(f'{entry}.innerText').lower().startswith(('intruders', 'class intruders'))
    pg.close()

@browser_test
def test_pages_on_a_phone_and_figures_drawn(site, browser):
    "At 390 px no page scrolls sideways; on every page with figures, plotly draws them all with no script error."
    ctx = browser.new_context(viewport={'width': 390, 'height': 844})
    wide, undrawn, errors = [], [], []
    for p in html_pages(site):
        if p.name in ('genindex.html', 'search.html', 'py-modindex.html'): continue
        pg = ctx.new_page()
        pg.on('pageerror', lambda e, p=p: errors.append(f'{p.relative_to(site)}: {e}'))
        pg.goto(p.as_uri(), wait_until='load')
        n = pg.evaluate('document.querySelectorAll(".plotly-graph-div").length')
        if n:
            pg.wait_for_function('n => document.querySelectorAll(".plotly-graph-div .main-svg").length >= n', arg=n,
                                 timeout=30_000)
        sw = pg.evaluate('document.documentElement.scrollWidth')
        if sw > 392: wide.append(f'{p.relative_to(site)}: {sw}px wide')
        pg.close()
    ctx.close()
    assert not errors, '\n'.join(errors[:10])
    assert not wide, 'pages scroll sideways on a phone:\n' + '\n'.join(wide)
