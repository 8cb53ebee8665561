#!/usr/bin/env python
"""Build the ftlab docs site without Quarto.

    python nbs/_site.py [--out _site] [--force] [--workers N] [--no-proc]

1. Runs nbdev's notebook processing (the step `nbdev_proc_nbs` / `nbdev_docs` run before Quarto):
   notebooks in nbs/ -> _proc/, with `show_doc` cells added after every `#| export` cell and
   executed, `#| hide` and exported cells removed, backticked names linked, and the first
   markdown cell (`# Title` / `> description`) moved into a YAML front-matter raw cell.
   We call `nbdev.serve.proc_nbs` directly: the `nbdev_proc_nbs` command would first try to
   download and install Quarto, and would write nbs/_quarto.yml, nbs/sidebar.yml and
   ftlab/_modidx.py, none of which this fallback needs.
2. Renders every processed notebook to <out>/<relative path>.html with nbconvert's HTMLExporter
   (classic cell markup, 'basic' body-only template, no prompts), keeping the saved outputs,
   inside a shared page with a navigation sidebar; writes <out>/site.css and <out>/plotly.min.js
   (from the installed plotly package, so figures render offline).

nbdev ignores this file (its name starts with `_`). Used by the Makefile when `quarto` is missing.
"""
from __future__ import annotations
import argparse, html, json, os, re, shutil, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = '.ftlab-site'  # marks an output folder this script may clear

# ---------------------------------------------------------------------------- processing

HASHES = '.ftlab-site-hashes.json'

def process(force:bool=False, workers:int|None=None) -> Path:
    "Run nbdev's docs processors over nbs/ into _proc/ (incremental unless `force`); return _proc."
    os.chdir(ROOT)  # nbdev finds settings.ini from the working directory
    import hashlib
    from nbdev.config import get_config
    from nbdev.serve import proc_nbs
    cfg = get_config()
    nbs, proc = cfg.nbs_path, cfg.config_path / '_proc'
    # nbdev's cache compares mtimes with the time the last run *ended*, so a notebook saved while a
    # build runs is never reprocessed. Key the cache on content instead: drop stale outputs first.
    hashes = {rel.as_posix(): hashlib.sha256((nbs / rel).read_bytes()).hexdigest() for rel in source_notebooks(nbs)}
    try: old = json.loads((proc / HASHES).read_text())
    except (OSError, ValueError): old = {}
    for rel, h in hashes.items():
        if force or old.get(rel) != h: (proc / rel).unlink(missing_ok=True)
    proc_nbs(path=str(nbs), n_workers=workers if workers is not None else min(os.cpu_count() or 1, 4), force=force)
    for rel in hashes:
        if not (proc / rel).exists(): sys.exit(f'nbdev processing failed for nbs/{rel}')
    (proc / HASHES).write_text(json.dumps(hashes, indent=1, sort_keys=True))
    return proc

def source_notebooks(nbs:Path) -> list[Path]:
    "Notebooks nbdev documents, relative to `nbs` (skips names starting with `_` or `.`, as nbdev does)."
    from nbdev.doclinks import nbglob
    return sorted(Path(p).relative_to(nbs) for p in nbglob(nbs, file_glob='*.ipynb', func=Path))

# ---------------------------------------------------------------------------- notebook -> page

_re_dir = re.compile(r'^\s*#\s*\|\s*(.*?)\s*$')

def cell_options(src:str) -> tuple[dict, str]:
    "Quarto/nbdev `#|` options at the top of a code cell, and the source without them."
    lines, opts = src.splitlines(), {}
    i = 0
    while i < len(lines) and _re_dir.match(lines[i]):
        d = _re_dir.match(lines[i]).group(1)
        k, _, v = d.partition(':') if ':' in d else (d.split(' ')[0], '', ' '.join(d.split(' ')[1:]))
        opts[k.strip()] = v.strip()
        i += 1
    return opts, '\n'.join(lines[i:]).strip('\n')

def is_false(v) -> bool: return str(v).strip().lower() in ('false', 'no', '0')

_re_attr_link = re.compile(r'\[([^\]\n]+)\]\(([^)\s]+)\)\{([^}\n]*)\}')

def _attrs(s:str) -> str:
    "Pandoc attributes `{.cls #id key=\"v\"}` as HTML attributes."
    classes, out = [], []
    for m in re.finditer(r'(\.[\w-]+)|(#[\w-]+)|([\w-]+)=("[^"]*"|\S+)', s):
        if m.group(1): classes.append(m.group(1)[1:])
        elif m.group(2): out.append(f'id="{m.group(2)[1:]}"')
        else: out.append(f'{m.group(3)}="{html.escape(m.group(4).strip(chr(34)))}"')
    if classes: out.insert(0, f'class="{" ".join(classes)}"')
    return ' '.join(out)

def fix_markdown(md:str) -> str:
    "Turn Pandoc link attributes (nbdev's `[source](url){...}`) into HTML links."
    def repl(m):
        cls = ' class="source-link"' if m.group(1) == 'source' else ''
        return f'<a href="{html.escape(m.group(2))}"{cls} {_attrs(m.group(3))}>{html.escape(m.group(1))}</a>'
    return _re_attr_link.sub(repl, md)

def _text(v) -> str: return v if isinstance(v, str) else ''.join(v)

def plotly_html(fig:dict, div_id:str) -> str:
    "A figure from its `application/vnd.plotly.v1+json` data; needs plotly.min.js on the page."
    import plotly.io as pio
    return pio.to_html(fig, include_plotlyjs=False, include_mathjax=False, full_html=False, div_id=div_id,
                       validate=False, default_width='100%')

_re_ext_script = re.compile(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>')

def prepare(nb, page_id:str) -> dict:
    "Apply cell options, fix markdown, make plotly figures self-contained; return the front matter."
    import yaml
    fm, cells, n_fig = {}, [], 0
    for cell in nb.cells:
        src = _text(cell.get('source', ''))
        if cell.cell_type == 'raw':
            if src.lstrip().startswith('---'):
                fm.update(yaml.safe_load(src.strip().strip('-')) or {})
                continue
            cells.append(cell); continue
        if cell.cell_type == 'markdown':
            if src.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED!'): continue
            cell.source = fix_markdown(src)
            cells.append(cell); continue
        opts, code = cell_options(src)
        if 'hide' in opts or is_false(opts.get('include', 'true')): continue
        cell.source = code
        md = cell.setdefault('metadata', {})
        if is_false(opts.get('echo', 'true')) or not code.strip():
            md.setdefault('transient', {})['remove_source'] = True
            md['tags'] = list(md.get('tags', [])) + ['no-input']  # -> class celltag_no-input
        if is_false(opts.get('output', 'true')): cell.outputs = []
        outs = []
        for o in cell.get('outputs', []):
            if o.get('output_type') == 'stream':  # what a terminal shows: text after a bare \r replaces the line
                o['text'] = re.sub(r'[^\n]*\r(?!\n)', '', _text(o.get('text', '')))
                if not o['text']: continue
            data = o.get('data')
            if data is not None:
                data.pop('application/vnd.jupyter.widget-view+json', None)  # no widget manager offline
                if 'application/vnd.plotly.v1+json' in data:
                    n_fig += 1
                    data['text/html'] = plotly_html(data.pop('application/vnd.plotly.v1+json'), f'{page_id}-fig{n_fig}')
                elif 'text/html' in data and 'Plotly.newPlot' in _text(data['text/html']):
                    # plotly's notebook renderers: use our local plotly.js, not a CDN copy or CDN MathJax
                    data['text/html'] = _re_ext_script.sub('', _text(data['text/html']))
                if 'text/markdown' in data: data['text/markdown'] = fix_markdown(_text(data['text/markdown']))
                if not data or (list(data) == ['text/plain'] and not _text(data['text/plain']).strip()):
                    continue   # nothing left, or the emptied output of a widget's progress line (ftlab.display.first_draw)
            outs.append(o)
        cell.outputs = outs
        if md.get('transient', {}).get('remove_source') and not outs: continue
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop('widgets', None)
    if 'title' not in fm:  # no front matter: title from the first H1
        for c in nb.cells:
            m = c.cell_type == 'markdown' and re.search(r'^#\s+(.+?)\s*$', c.source, re.M)
            if m: fm['title'] = m.group(1); break
    return fm

def slug(s:str) -> str:
    "Quarto-style heading id (what nbdev's doc links point at: `#task`, `#task.sample`)."
    s = re.sub(r'<[^>]+>', '', html.unescape(s)).strip().lower()
    return re.sub(r'\s+', '-', re.sub(r'[^\w\s.-]', '', s))

_re_heading = re.compile(r'<h([1-6]) id="([^"]*)">(.*?)<a class="anchor-link" href="#[^"]*">', re.S)

def fix_html(body:str, rel_href) -> str:
    "Quarto-style heading ids, and absolute doc links rewritten to pages of this site."
    def heading(m):
        i = slug(m.group(3)) or m.group(2) or 'section'
        return f'<h{m.group(1)} id="{i}">{m.group(3)}<a class="anchor-link" href="#{i}">'
    body = _re_heading.sub(heading, body)
    return rel_href(body)

# ---------------------------------------------------------------------------- site

CSS = """
:root { --side: 250px; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --code-bg: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; font: 16px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
nav.sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: var(--side); overflow-y: auto; padding: 20px 16px;
  background: #f6f8fa; border-right: 1px solid var(--line); font-size: 15px; }
nav.sidebar .site-title { font-size: 20px; font-weight: 700; margin-bottom: 2px; } nav.sidebar .site-title a { color: var(--fg); }
nav.sidebar .site-desc { color: var(--muted); font-size: 13px; line-height: 1.4; margin-bottom: 16px; }
nav.sidebar ul { list-style: none; margin: 0; padding: 0; } nav.sidebar li { margin: 1px 0; }
nav.sidebar li a { display: block; padding: 4px 8px; border-radius: 6px; color: var(--fg); }
nav.sidebar li a:hover { background: #eaeef2; text-decoration: none; }
nav.sidebar li a.active { background: #ddf4ff; color: var(--accent); font-weight: 600; }
nav.sidebar .section { margin: 14px 0 4px; padding: 0 8px; color: var(--muted); font-size: 12px; font-weight: 600;
  text-transform: uppercase; letter-spacing: .04em; }
main { margin-left: var(--side); padding: 28px 48px 80px; max-width: calc(var(--side) + 1000px); }
header.page h1 { font-size: 2.1em; margin: 0 0 .2em; } header.page .description { color: var(--muted); font-size: 1.12em; margin: 0 0 1.5em; }
h1, h2, h3, h4 { line-height: 1.25; margin: 1.4em 0 .5em; } h2 { border-bottom: 1px solid var(--line); padding-bottom: .25em; }
a.anchor-link { visibility: hidden; margin-left: .3em; font-size: .8em; color: var(--muted); }
h1:hover a.anchor-link, h2:hover a.anchor-link, h3:hover a.anchor-link, h4:hover a.anchor-link { visibility: visible; }
.cell { margin: 10px 0; }
.input_area { background: var(--code-bg); border: 1px solid var(--line); border-radius: 6px; overflow-x: auto; }
.input_area pre, .highlight pre { margin: 0; padding: 10px 14px; }
pre, code { font: 13.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
p code, li code, td code { background: var(--code-bg); padding: .1em .35em; border-radius: 4px; font-size: .88em; }
.output_wrapper { margin: 4px 0 0; padding-left: 14px; border-left: 3px solid #eaeef2; }
.celltag_no-input .output_wrapper { padding-left: 0; border-left: 0; }
.output_area pre { margin: 4px 0; padding: 0; overflow-x: auto; white-space: pre; }
.output_stderr { background: #fff8e6; } .output_error pre { background: #ffebe9; padding: 6px; }
.rendered_html table, .output_html table { border-collapse: collapse; margin: .6em 0; font-size: 13.5px; }
.rendered_html th, .rendered_html td { border: 1px solid var(--line); padding: 4px 9px; text-align: right; }
.rendered_html thead th { background: var(--code-bg); } .rendered_html tbody tr:nth-child(even) { background: #fafbfc; }
.output_html { overflow-x: auto; }
/* nbdev show_doc entries */
.output_markdown hr { border: 0; border-top: 1px solid var(--line); margin: 1.6em 0 .2em; }
.output_markdown h2, .output_markdown h3, .output_markdown h4 { border: 0; margin-top: .3em; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.output_markdown blockquote { margin: .4em 0; } .output_markdown blockquote pre { background: var(--code-bg); padding: 8px 12px; border-radius: 6px; overflow-x: auto; }
.output_markdown td, .output_markdown th { text-align: left; }
a.source-link { float: right; font-size: 13px; margin-top: .4em; }
blockquote { border-left: 3px solid var(--line); margin: 1em 0; padding: 0 1em; color: var(--muted); }
.output_markdown blockquote { border: 0; padding: 0; color: var(--fg); }
img { max-width: 100%; }
footer { margin-top: 4em; color: var(--muted); font-size: 13px; }
@media (max-width: 800px) { nav.sidebar { position: static; width: auto; border-right: 0; } main { margin-left: 0; padding: 16px; } }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {site}</title>
<link rel="stylesheet" href="{root}site.css">
{head}</head>
<body>
<nav class="sidebar">
<div class="site-title"><a href="{root}index.html">{site}</a></div>
<div class="site-desc">{desc}</div>
{nav}
</nav>
<main>
<header class="page"><h1 class="title">{title}</h1>{description}</header>
{body}
<footer>Built from the notebooks by nbdev + nbconvert (<code>nbs/_site.py</code>).</footer>
</main>
</body>
</html>
"""

def nav_html(pages, current:Path) -> str:
    root = '../' * (len(current.parts) - 1)
    out, section = ['<ul>'], None
    for p in pages:
        sec = str(p['html'].parent) if p['html'].parent != Path('.') else None
        if sec != section:
            out.append(f'</ul><div class="section">{html.escape(sec)}</div><ul>'); section = sec
        cls = ' class="active"' if p['html'] == current else ''
        out.append(f'<li><a href="{root}{p["html"].as_posix()}"{cls}>{html.escape(p["title"])}</a></li>')
    out.append('</ul>')
    return '\n'.join(out)

def _order(rel:Path):
    "index first, then top-level pages, then sub-folders, each sorted by path."
    return (len(rel.parts) > 1, rel.stem != 'index', rel.as_posix())

def build(out:Path, proc:Path, nbs:Path, cfg) -> list[Path]:
    import nbformat
    from nbconvert import HTMLExporter
    from nbdev.frontmatter import _nbpath2html
    from pygments.formatters import HtmlFormatter
    import plotly.offline

    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            sys.exit(f'{out} exists and was not made by {Path(__file__).name}; remove it or choose --out')
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text('built by nbs/_site.py\n')

    pages = []
    for rel in sorted(source_notebooks(nbs), key=_order):
        src = proc / rel
        if not src.exists(): sys.exit(f'{src} missing: nbdev processing failed for nbs/{rel}')
        page_id = re.sub(r'\W+', '-', rel.with_suffix('').as_posix())
        d = json.loads(src.read_text(encoding='utf-8'))
        for i, c in enumerate(d['cells']):  # cells nbdev added have no id: give stable ones, not random
            if not c.get('id'): c['id'] = f'{page_id}-{i}'[-64:]
        d['nbformat'], d['nbformat_minor'] = 4, max(d.get('nbformat_minor', 5), 5)
        nb = nbformat.reads(json.dumps(d), as_version=4)  # (joins multi-line strings, as nbformat.read does)
        fm = prepare(nb, page_id)
        html_rel = rel.with_suffix('.html')
        quarto_rel = rel.parent / fm.get('output-file', _nbpath2html(rel).name)  # where nbdev's links point
        pages.append(dict(rel=rel, nb=nb, fm=fm, html=html_rel, quarto=quarto_rel.as_posix(),
                          title=str(fm.get('title') or rel.stem)))

    baseurl = cfg.get('doc_baseurl', '').strip('/')
    base = cfg.get('doc_host', '').rstrip('/') + ('/' + baseurl if baseurl else '') + '/'  # as in nbdev's doc links
    targets = {p['quarto']: p['html'] for p in pages} | {p['html'].as_posix(): p['html'] for p in pages}
    re_link = re.compile(r'href="' + re.escape(base) + r'([^"#]*)(#[^"]*)?"')

    exporter = HTMLExporter(template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True,
                            anchor_link_text='#')
    css = CSS + HtmlFormatter(style='default').get_style_defs('.highlight')
    (out / 'site.css').write_text(css)
    (out / 'plotly.min.js').write_text(plotly.offline.get_plotlyjs(), encoding='utf-8')

    for p in pages:
        here = p['html']
        root = '../' * (len(here.parts) - 1)
        def rel_href(body, root=root):
            def repl(m):
                t = targets.get(m.group(1) or 'index.html')
                if t is None: return m.group(0)
                return f'href="{root}{t.as_posix()}{(m.group(2) or "").lower()}"'
            return re_link.sub(repl, body)
        body, _ = exporter.from_notebook_node(p['nb'], resources={'metadata': {'name': p['rel'].stem}})
        body = fix_html(body, rel_href)
        head = ''
        if 'plotly-graph-div' in body or 'Plotly.newPlot' in body:
            head = (f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>\n"
                    f'<script src="{root}plotly.min.js"></script>\n')
        desc = p['fm'].get('description')
        page = PAGE.format(title=html.escape(p['title']), site=html.escape(cfg.title), root=root, head=head,
                           desc=html.escape(cfg.get('description', '')), nav=nav_html(pages, here),
                           description=f'<p class="description">{html.escape(str(desc))}</p>' if desc else '',
                           body=body)
        dest = out / here
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(page, encoding='utf-8')
    if not any(p['html'] == Path('index.html') for p in pages):  # no index notebook yet: redirect to the first page
        first = pages[0]['html'].as_posix() if pages else ''
        (out / 'index.html').write_text(f'<!DOCTYPE html><meta charset="utf-8"><meta http-equiv="refresh" '
                                        f'content="0; url={first}"><a href="{first}">{first}</a>\n')
    return [p['html'] for p in pages]

def readme(nbs:Path, dest:Path) -> Path:
    "Render nbs/index.ipynb (hidden cells dropped, saved outputs kept) to Markdown at `dest`, as nbdev_readme does."
    import nbformat
    from nbconvert import MarkdownExporter
    nb = nbformat.read(nbs / 'index.ipynb', as_version=4)
    nb.cells = [c for c in nb.cells if not re.match(r'\s*#\s*\|\s*hide', ''.join(c.source))]
    for c in nb.cells:
        if c.cell_type == 'code':
            c.source = '\n'.join(l for l in c.source.splitlines() if not _re_dir.match(l))
            c.outputs = [o for o in c.outputs if o.get('output_type') != 'stream' or o.get('name') != 'stderr']
    body, _ = MarkdownExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    dest.write_text('<!-- generated from nbs/index.ipynb by `make docs` (nbs/_site.py): edit the notebook, not this file -->\n\n'
                    + body.strip() + '\n')
    return dest

def execute(nbs:Path, names=None, slow_too:bool=False) -> None:
    "Run the source notebooks (cells flagged `#| slow` skipped unless `slow_too`, keeping their saved outputs) and save their outputs, then nbdev_clean them."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    import subprocess
    for rel in source_notebooks(nbs):
        if names and rel.stem not in names: continue
        path = nbs / rel
        nb = read_nb(path)
        slow = lambda c: c.cell_type == 'code' and any(_re_dir.match(l) and _re_dir.match(l).group(1).startswith('slow')
                                                       for l in c.source.splitlines()[:3])
        for c in nb.cells:   # the cells that are not run (slow ones, without --slow) keep their saved outputs
            if c.cell_type == 'code' and (slow_too or not slow(c)): c['outputs'], c['execution_count'] = [], None
        os.chdir(path.parent)
        CaptureShell(path).run_all(nb, exc_stop=True, preproc=(lambda c: False) if slow_too else slow)
        os.chdir(ROOT)
        write_nb(nb, path); print('executed', rel)
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean'), '--fname', str(nbs)], check=True)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--readme', action='store_true', help='only write README.md from nbs/index.ipynb')
    ap.add_argument('--execute', nargs='*', default=None, metavar='NB',
                    help='first run the notebooks (all, or the named stems) and save their outputs')
    ap.add_argument('--slow', action='store_true', help='with --execute: run the `#| slow` cells too')
    ap.add_argument('--out', default='_site', help='output folder (relative to the repo root), default _site')
    ap.add_argument('--force', action='store_true', help='reprocess every notebook (ignore the _proc cache)')
    ap.add_argument('--workers', type=int, default=None, help='nbdev processing workers (default: cores, at most 4)')
    ap.add_argument('--no-proc', action='store_true', help='render the existing _proc/ without reprocessing')
    a = ap.parse_args(argv)
    t0 = time.time()
    os.chdir(ROOT)
    from nbdev.config import get_config
    cfg = get_config()
    out = Path(a.out) if Path(a.out).is_absolute() else ROOT / a.out
    if a.execute is not None: execute(cfg.nbs_path, a.execute, a.slow)
    readme(cfg.nbs_path, ROOT / 'README.md'); print('README.md written from nbs/index.ipynb')
    if a.readme: return
    proc = cfg.config_path / '_proc' if a.no_proc else process(a.force, a.workers)
    t1 = time.time()
    pages = build(out, proc, cfg.nbs_path, cfg)
    t2 = time.time()
    print(f'{len(pages)} pages in {out} (nbdev processing {t1 - t0:.1f}s, rendering {t2 - t1:.1f}s):')
    for p in pages: print('  ', p.as_posix())

if __name__ == '__main__': main()
