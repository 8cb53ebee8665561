"""The docs site built by nbs/_site.py (the Quarto-free fallback of `nbdev_docs`).

Builds the site into a temporary folder, or checks an existing build: FTLAB_SITE=_site pytest tests/test_site.py
"""
import ast, json, os, re, subprocess, sys, warnings
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
LIB = ROOT / 'ftlab'
MODULE_NBS = sorted(NBS.glob('[0-9]*.ipynb'))  # the numbered notebooks, one module each


@pytest.fixture(scope='session')
def site(tmp_path_factory):
    if os.environ.get('FTLAB_SITE'):
        d = Path(os.environ['FTLAB_SITE'])
        d = d if d.is_absolute() else ROOT / d
        assert d.is_dir(), f'FTLAB_SITE={d} is not a folder'
        return d
    d = tmp_path_factory.mktemp('site') / '_site'
    r = subprocess.run([sys.executable, str(NBS / '_site.py'), '--out', str(d)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f'site build failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
    return d


def cells(nb_path):
    return json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']


def src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']


def default_exp(nb_path):
    "Module name from the `#| default_exp` line of the notebook's first cell (None without one)."
    m = re.search(r'^\s*#\s*\|\s*default_exp\s+(\S+)', src(cells(nb_path)[0]), re.M)
    return m.group(1) if m else None


def module_api(mod):
    "`__all__` of ftlab/<mod>.py, split into (functions and classes, other names), read without importing."
    path = LIB / (mod.replace('.', '/') + '.py')
    assert path.exists(), f'{path} missing: run nbdev_export'
    tree = ast.parse(path.read_text(encoding='utf-8'))
    names = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, 'id', None) == '__all__' for t in n.targets)), [])
    defs = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return [n for n in names if n in defs], [n for n in names if n not in defs]


def page(site, nb_path):
    p = site / Path(nb_path).relative_to(NBS).with_suffix('.html')
    assert p.exists(), f'no page {p.name} for {Path(nb_path).name}'
    return BeautifulSoup(p.read_text(encoding='utf-8'), 'html.parser')


def heading_names(soup):
    "Text of the h2/h3/h4 headings in the page body, without the anchor-link marker."
    out = set()
    for h in soup.select('main h2, main h3, main h4'):
        for a in h.select('a.anchor-link'): a.extract()
        out.add(h.get_text(strip=True))
    return out


def test_module_notebooks_exist():
    assert MODULE_NBS, 'no numbered notebooks in nbs/'


def test_one_page_per_notebook(site):
    expected = {p.relative_to(NBS).with_suffix('.html') for p in NBS.rglob('*.ipynb')
                if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts)}
    for p in expected: assert (site / p).exists(), f'missing page {p}'
    for p in MODULE_NBS: assert (site / (p.stem + '.html')).exists()
    assert (site / 'index.html').exists()
    if (NBS / 'index.ipynb').exists():  # the home page is the index notebook, not the fallback redirect
        assert page(site, NBS / 'index.ipynb').select_one('nav.sidebar') is not None


def test_assets(site):
    js = site / 'plotly.min.js'
    assert js.exists() and js.stat().st_size > 1_000_000
    assert (site / 'site.css').exists()


@pytest.mark.parametrize('nb_path', MODULE_NBS, ids=lambda p: p.stem)
def test_api_documented(site, nb_path):
    "Every exported function and class of the notebook's module has a show_doc heading on its page."
    mod = default_exp(nb_path)
    soup = page(site, nb_path)
    if mod is None: return
    defs, other = module_api(mod)
    heads = heading_names(soup)
    missing = [n for n in defs if n not in heads]
    assert not missing, f'{nb_path.name}: no API entry for {missing} (module ftlab.{mod})'
    # nbdev documents only functions and classes; other exported names (constants) get no entry
    text = soup.select_one('main').get_text(' ')
    unmentioned = [n for n in other if n not in heads and not re.search(rf'\b{re.escape(n)}\b', text)]
    if unmentioned:
        warnings.warn(f'{nb_path.name}: exported names never shown on the page: {unmentioned}')


@pytest.mark.parametrize('nb_path', MODULE_NBS, ids=lambda p: p.stem)
def test_hidden_and_directives(site, nb_path):
    "`#| hide` cells are absent, other code cells are shown without their `#|` lines."
    soup = page(site, nb_path)
    code = '\n'.join(d.get_text() for d in soup.select('main .input_area'))
    assert not re.search(r'^\s*#\s*\|', code, re.M), 'a #| directive line is shown'
    for c in cells(nb_path):
        if c['cell_type'] != 'code': continue
        body = '\n'.join(l for l in src(c).splitlines() if not re.match(r'\s*#\s*\|', l)).strip()
        if not body: continue
        if re.search(r'^\s*#\s*\|\s*hide\s*$', src(c), re.M):
            assert body not in code, f'hidden cell shown:\n{body}'
        elif not re.search(r'^\s*#\s*\|\s*(export|exporti|exports|default_exp|eval:\s*false|include:\s*false|echo:\s*false)',
                           src(c), re.M):
            assert body.splitlines()[0].strip() in code, f'code cell missing from the page:\n{body[:200]}'


def test_sidebar_and_offline(site):
    pages = sorted(p for p in site.rglob('*.html') if p.name != 'index.html' or (NBS / 'index.ipynb').exists())
    for p in pages:
        soup = BeautifulSoup(p.read_text(encoding='utf-8'), 'html.parser')
        nav = soup.select_one('nav.sidebar')
        assert nav is not None, f'{p.name}: no sidebar'
        assert len(nav.select('li a')) == len(pages), f'{p.name}: sidebar does not list every page'
        for a in nav.select('li a'): assert (p.parent / a['href']).exists(), f'{p.name}: broken link {a["href"]}'
        for s in soup.select('script[src]'):  # nothing from the internet: plotly.js is local
            assert not s['src'].startswith(('http:', 'https:', '//')), f'{p.name}: external script {s["src"]}'
        if soup.select('.plotly-graph-div'):
            assert any(s['src'].endswith('plotly.min.js') for s in soup.select('script[src]')), f'{p.name}: no plotly.js'


# the pages whose notebooks save a widget's output, and how many of its figures each must show
WIDGET_PAGES = {'21_spectral.html': 'ftlab-intruders', '22_merge.html': 'ftlab-merge', '23_localize.html': 'ftlab-graft',
                '24_patching.html': 'ftlab-patch', 'tutorials/getting_started.html': 'ftlab-liveplot'}

def test_widgets_shown_not_their_text(site):
    "No page shows a widget's text repr; the pillars' pages show their widget's static copy with its figures."
    for p in sorted(site.rglob('*.html')):
        outputs = ' '.join(o.get_text() for o in BeautifulSoup(p.read_text(encoding='utf-8'), 'html.parser').select('div.output_area'))
        for repr_ in ('VBox(children=', 'FigureWidget({', 'HBox(children=', 'HTML(value=', 'Panel(children='):
            assert repr_ not in outputs, f'{p.relative_to(site)} shows a widget as text: {repr_}'
    for name, cls in WIDGET_PAGES.items():
        soup = BeautifulSoup((site / name).read_text(encoding='utf-8'), 'html.parser')
        static = soup.select(f'div.ftlab-static.{cls}')
        assert static, f'{name}: no static copy of the {cls} widget'
        assert static[0].select('div.plotly-graph-div'), f'{name}: the {cls} widget\'s copy has no figure'
