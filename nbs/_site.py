#!/usr/bin/env python
"""Build the ftlab docs site with Sphinx, myst-nb and the Furo theme.

    python nbs/_site.py [--out _site] [--readme] [--execute [NB ...]] [--slow]

nbdev's notebooks stay the source of truth. This script never runs a notebook cell (unless you ask with
--execute): it uses the outputs saved in the notebooks, so a docs build never trains anything.

1. Processing (`process_notebook`), nbs/**.ipynb -> _proc/**.ipynb, in the way nbdev's own processors go:
   `#| hide` cells and `#|` directive lines removed, `echo: false` / `output: false` honoured, and every
   `#| export` cell replaced by API entries for the public names it defines. The entries are rendered from
   the *exported* module (`api_entries`): signature, docstring and a docments parameter table for every
   public function, class, method, property and constant, as Sphinx Python-domain objects, so they are in
   the search index, in each page's contents and cross-linkable. Backticked API names in markdown become
   links. Saved outputs are cleaned (widget views -> their static HTML copy, plotly JSON -> HTML drawn
   after the deferred plotly.js loads, no warnings, progress bars or temporary paths); `#| slow` cells
   (the refresh cells of the studies) are collapsed so results come first.
2. Sphinx (`sphinx-build -b html`, myst-nb with execution off, Furo): search, navigation, per-page contents,
   previous/next links, copy buttons and [source] links. plotly.js is served once, from _static, and only
   pages with a figure load it, deferred.

README.md is written from nbs/index.ipynb on every run (as nbdev_readme does). nbdev ignores this file (its
name starts with `_`). `make docs` runs it.
"""
from __future__ import annotations
import argparse, ast, dataclasses, html, importlib, inspect, json, os, re, shutil, subprocess, sys, time, typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = '.ftlab-site'  # marks an output folder this script may clear
PACKAGE = 'ftlab'

# ---------------------------------------------------------------------------- notebooks and cell options

def source_notebooks(nbs:Path) -> list[Path]:
    "Notebooks the site documents, relative to `nbs` (skips names starting with `_` or `.`, as nbdev does)."
    return sorted(p.relative_to(nbs) for p in nbs.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(nbs).parts))

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

def _text(v) -> str: return v if isinstance(v, str) else ''.join(v)

def default_exp(cells) -> str|None:
    for c in cells:
        m = c['cell_type'] == 'code' and re.search(r'^\s*#\s*\|\s*default_exp\s+(\S+)', _text(c['source']), re.M)
        if m: return m.group(1)
    return None

# ---------------------------------------------------------------------------- API entries

_ALIASES = {'pandas': 'pd', 'numpy': 'np'}

def type_name(a) -> str:
    "A readable annotation: `str | Path | None`, `pd.DataFrame`, `nn.Module`, `Task` (no `__main__.`/module paths)."
    if a is inspect.Parameter.empty: return ''
    if isinstance(a, str): s = a.strip('"\'')
    elif isinstance(a, type) and not typing.get_args(a):
        m, q = a.__module__, a.__qualname__
        if m in ('builtins', 'pathlib', 'typing', 'collections.abc') or m.startswith((PACKAGE + '.', '__main__')): return q
        top = m.split('.')[0]
        if top in _ALIASES: return f'{_ALIASES[top]}.{q}'
        if top == 'torch':
            import torch
            if getattr(torch, q, None) is a: return f'torch.{q}'
            if getattr(torch.nn, q, None) is a: return f'nn.{q}'
        return f'{m}.{q}' if top != m else f'{top}.{q}'
    else: s = repr(a) if not isinstance(a, type) else str(a)
    s = s.replace('NoneType', 'None')
    s = re.sub(r"<class '([\w.]+)'>", r'\1', s)
    s = re.sub(r'\b(?:typing|pathlib|collections\.abc|builtins|__main__|' + PACKAGE + r'\.\w+)\.', '', s)
    s = re.sub(r'\bpandas\.(?:core\.\w+\.)*', 'pd.', s)
    s = re.sub(r'\bnumpy\.', 'np.', s)
    s = re.sub(r'\btorch\.nn\.modules\.\w+\.', 'nn.', s)
    return s

def default_repr(v, limit:int=60) -> str:
    "A default value as Python source; `…` where it is longer than `limit` or not an expression (`<object at 0x…>`)."
    if v is inspect.Parameter.empty: return ''
    if isinstance(v, DefaultFactory): return v.text
    r = v.__name__ if inspect.isfunction(v) or inspect.isclass(v) else repr(v)
    try: ast.parse(r, mode='eval')
    except SyntaxError: return '…'
    return r if len(r) <= limit else '…'

class DefaultFactory:
    "A dataclass field's `default_factory`, shown as the call that makes the default: `dict()`."
    def __init__(self, f): self.text = f'{getattr(f, "__name__", "factory")}()'

def own_doc(obj) -> str:
    "The object's own docstring (not one inherited, not a dataclass's generated signature)."
    d = obj.__dict__.get('__doc__') if inspect.isclass(obj) else getattr(obj, '__doc__', None)
    if not isinstance(d, str): return ''
    if inspect.isclass(obj) and re.match(rf'{re.escape(obj.__name__)}\(', d): return ''
    return inspect.cleandoc(d)

def parameters(f) -> list[inspect.Parameter]:
    "The parameters a caller passes (no `self`/`cls`); a dataclass field's default factory as `DefaultFactory`."
    try: sig = inspect.signature(f)
    except (TypeError, ValueError): return []
    ps = list(sig.parameters.values())
    if ps and ps[0].name in ('self', 'cls') and not isinstance(f, type): ps = ps[1:]
    fields = getattr(f, '__dataclass_fields__', {}) if isinstance(f, type) else {}
    return [p.replace(default=DefaultFactory(fields[p.name].default_factory))
            if p.name in fields and fields[p.name].default_factory is not dataclasses.MISSING else p for p in ps]

def docments_of(f) -> dict:
    "Parameter comments (fastcore docments), {} where the source cannot be read."
    from fastcore.docments import docments
    try: return {k: v for k, v in docments(f, full=False).items() if v}
    except Exception: return {}

def _esc(s:str) -> str: return s.replace('|', r'\|').replace('\n', ' ')

def signature_text(name:str, f) -> str:
    "`name(a: int = 1, *, b: str = 'x') -> T`, as Sphinx's Python domain parses it."
    try: sig = inspect.signature(f)
    except (TypeError, ValueError): return name + '()'
    parts, star = [], False
    ps = parameters(f)
    for p in ps:
        if p.kind == p.KEYWORD_ONLY and not star: parts.append('*'); star = True
        if p.kind == p.VAR_POSITIONAL: star = True
        pre = '*' if p.kind == p.VAR_POSITIONAL else '**' if p.kind == p.VAR_KEYWORD else ''
        s = pre + p.name
        t = type_name(p.annotation)
        if t: s += f': {t}'
        if p.default is not p.empty: s += f' = {default_repr(p.default)}' if t else f'={default_repr(p.default)}'
        parts.append(s)
    ret = '' if isinstance(f, type) else type_name(sig.return_annotation)
    return f'{name}({", ".join(parts)})' + (f' -> {ret}' if ret and ret != 'None' else '')

def param_table(f, link) -> str:
    "A Markdown table of the parameters: name, type, default and the docments comment."
    ps = parameters(f)
    if not ps: return ''
    docs = docments_of(f)
    rows = ['| Parameter | Type | Default | Details |', '|---|---|---|---|']
    for p in ps:
        pre = '\\*' if p.kind == p.VAR_POSITIONAL else '\\*\\*' if p.kind == p.VAR_KEYWORD else ''
        t, d = type_name(p.annotation), default_repr(p.default, 160)
        rows.append(f'| {pre}`{p.name}` | {f"`{_esc(t)}`" if t else ""} | {f"`{_esc(d)}`" if d else ""} '
                    f'| {_esc(link(docs.get(p.name, "") or ""))} |')
    return '\n'.join(rows)

def member_kind(cls, name:str):
    "'method', 'classmethod', 'staticmethod', 'property' or None, for a name in the class's own namespace."
    v = inspect.getattr_static(cls, name)
    if isinstance(v, property) or type(v).__name__ == 'cached_property': return 'property'
    if isinstance(v, classmethod): return 'classmethod'
    if isinstance(v, staticmethod): return 'staticmethod'
    if inspect.isfunction(v): return 'method'
    return None

def public_members(cls) -> list[tuple[str, str]]:
    "The class's own public methods and properties, in source order: [(name, kind)]."
    out = []
    for name in cls.__dict__:
        if name.startswith('_'): continue
        k = member_kind(cls, name)
        if k: out.append((name, k))
    return out

def fence(directive:str, arg:str, body:str, depth:int=0) -> str:
    "A MyST directive; `depth` adds backticks so that it can hold directives of lower depth."
    ticks = '`' * (3 + depth)
    return f'{ticks}{{{directive}}} {arg}\n{body.strip(chr(10))}\n{ticks}'

def entry(obj, name:str, module:str, link) -> str:
    "One Sphinx Python-domain entry in MyST: a function, a class (with its public members) or a constant."
    head = f':module: {module}\n\n'
    if inspect.isclass(obj):
        has_init = dataclasses.is_dataclass(obj) or any('__init__' in k.__dict__ or '__new__' in k.__dict__
                                                         for k in obj.__mro__[:-1] if k.__module__.startswith(PACKAGE))
        sig = signature_text(name, obj) if has_init else name
        members = [entry_member(obj, n, k, link) for n, k in public_members(obj)]
        parts = [link(own_doc(obj)), param_table(obj, link) if has_init else '', *members]
        return fence('py:class', sig, head + '\n\n'.join(x for x in parts if x), 1)
    if callable(obj):
        parts = [link(own_doc(obj)), param_table(obj, link)]
        return fence('py:function', signature_text(name, obj), head + '\n\n'.join(x for x in parts if x))
    r = repr(obj)
    r = r if len(r) <= 100 else r[:97] + '…'
    return fence('py:data', name, f':module: {module}\n:value: {r}')

def entry_member(cls, name:str, kind:str, link) -> str:
    "A method or property of a class, nested in the class's entry."
    obj = inspect.getattr_static(cls, name)
    if kind == 'property':
        f = obj.fget if isinstance(obj, property) else obj.func
        t = type_name(inspect.signature(f).return_annotation) if f else ''
        return fence('py:property', name, (f':type: {t}\n' if t else '') + '\n' + link(own_doc(f)))
    f = obj.__func__ if kind in ('classmethod', 'staticmethod') else obj
    opt = {'classmethod': ':classmethod:\n', 'staticmethod': ':staticmethod:\n'}.get(kind, '')
    parts = [link(own_doc(f)), param_table(f, link)]
    return fence('py:method', signature_text(name, f), opt + '\n' + '\n\n'.join(x for x in parts if x))

def defined_names(code:str) -> list[str]:
    "Top-level names a code cell defines (functions, classes, assigned constants), in order."
    try: tree = ast.parse(code)
    except SyntaxError: return []
    out = []
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): out.append(n.name)
        elif isinstance(n, ast.Assign): out += [t.id for t in n.targets if isinstance(t, ast.Name)]
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name): out.append(n.target.id)
    return out

class Linker:
    "Backticked API names in Markdown -> Sphinx cross-references: `intruders`, `Task.sample`, `ftlab.tasks.TASKS`."
    def __init__(self, modules:list[str]):
        self.targets, seen = {}, {}
        for m in modules:
            mod = importlib.import_module(f'{PACKAGE}.{m}')
            self.targets[f'{PACKAGE}.{m}'] = (f'{PACKAGE}.{m}', 'mod')
            for n in getattr(mod, '__all__', []):
                obj = getattr(mod, n, None)
                fq = f'{PACKAGE}.{m}.{n}'
                role = 'class' if inspect.isclass(obj) else 'func' if callable(obj) else 'data'
                seen.setdefault(n, []).append((fq, role))
                self.targets[fq] = self.targets[f'{m}.{n}'] = (fq, role)
                if inspect.isclass(obj):
                    for mn, k in public_members(obj):
                        r = 'attr' if k == 'property' else 'meth'
                        self.targets[f'{n}.{mn}'] = self.targets[f'{fq}.{mn}'] = (f'{fq}.{mn}', r)
        self.short = seen
        self.module = None

    def target(self, name:str):
        name = name.removesuffix('()')
        if name in self.targets: return self.targets[name]
        opts = self.short.get(name, [])
        if len(opts) == 1: return opts[0]
        here = [o for o in opts if self.module and o[0].startswith(f'{PACKAGE}.{self.module}.')]
        return here[0] if len(here) == 1 else None

    _re_code = re.compile(r'(?<![`\w{])`([A-Za-z_][\w.]*(?:\(\))?)`(?!`)')

    def __call__(self, md:str) -> str:
        if not md: return md
        out, in_fence = [], False
        for line in md.split('\n'):
            if re.match(r'\s*(```|~~~)', line): in_fence = not in_fence; out.append(line); continue
            if in_fence: out.append(line); continue
            def repl(m):
                t = self.target(m.group(1))
                if t is None: return m.group(0)
                title = m.group(1).replace('<', r'\<')
                return f'{{py:{t[1]}}}`{title} <{t[0]}>`'
            # not inside link text `[...]` already
            parts = re.split(r'(\[[^\]]*\]\([^)]*\))', line)
            out.append(''.join(p if p.startswith('[') and '](' in p else self._re_code.sub(repl, p) for p in parts))
        return '\n'.join(out)

def api_entries(module:str, names:list[str], link, done:set) -> str:
    "Entries for the public names of `module` among `names` (each once per page)."
    mod = importlib.import_module(f'{PACKAGE}.{module}')
    public = set(getattr(mod, '__all__', []))
    out = []
    for n in names:
        if n not in public or n in done or n.startswith('_'): continue
        done.add(n)
        out.append(entry(getattr(mod, n), n, f'{PACKAGE}.{module}', link))
    return '\n\n'.join(out)

# ---------------------------------------------------------------------------- outputs

_re_tmp = re.compile(r'(?:/private)?/(?:tmp|var/folders/[\w/]+)/tmp[\w.-]+')
_re_script = re.compile(r'(<script(?:\s+type="text/javascript")?>)(.*?)(</script>)', re.S)
_re_ext_script = re.compile(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>')
_re_widget_repr = re.compile(r'\s*(VBox|HBox|Panel|FigureWidget|HTML)\(')
_re_warning = re.compile(r'^.*?\w+Warning: .*$|^\s*warnings\.warn\(.*$', re.M)

def clean_paths(s:str) -> str:
    "Temporary and machine paths out of an output: `/tmp/tmpab12/run` -> `…/run`."
    s = _re_tmp.sub('…', s)
    s = s.replace(str(ROOT) + '/', '').replace(str(Path.home()) + '/', '~/')
    return s

def defer_plotly(h:str) -> str:
    "Plotly's inline scripts run after the deferred plotly.js has loaded (on DOMContentLoaded); no CDN copies."
    h = _re_ext_script.sub('', h)
    def repl(m):
        body = m.group(2)
        if 'Plotly.' not in body: return m.group(0)
        return f"{m.group(1)}document.addEventListener('DOMContentLoaded', function () {{{body}}});{m.group(3)}"
    return _re_script.sub(repl, h)

def plotly_html(fig:dict, div_id:str) -> str:
    import plotly.io as pio
    return pio.to_html(fig, include_plotlyjs=False, include_mathjax=False, full_html=False, div_id=div_id,
                       validate=False, default_width='100%')

def clean_outputs(outputs:list, page_id:str, counter:list) -> list:
    "Saved outputs as the site shows them (see the module docstring)."
    outs = []
    for o in outputs:
        if o.get('output_type') == 'stream':
            t = re.sub(r'[^\n]*\r(?!\n)', '', _text(o.get('text', '')))   # a terminal's view: \r replaces the line
            if o.get('name') == 'stderr':
                t = _re_warning.sub('', t)
                t = '\n'.join(l for l in t.split('\n') if not re.search(r'\d+%\|.*\|.*(it/s|s/it)', l))
            t = clean_paths(t)
            if not t.strip(): continue
            o['text'] = t
        elif o.get('output_type') == 'error':
            o['traceback'] = [clean_paths(l) for l in o.get('traceback', [])]
        data = o.get('data')
        if data is not None:
            data.pop('application/vnd.jupyter.widget-view+json', None)   # no widget manager on a static page
            if 'application/vnd.plotly.v1+json' in data:
                counter[0] += 1
                data['text/html'] = plotly_html(data.pop('application/vnd.plotly.v1+json'), f'{page_id}-fig{counter[0]}')
            for k in list(data):
                if k.startswith('text/') or k == 'application/javascript': data[k] = clean_paths(_text(data[k]))
            if 'text/html' in data:
                h = data['text/html']
                if 'Plotly.' in h: data['text/html'] = defer_plotly(h)
            if not data or (list(data) == ['text/plain'] and not data['text/plain'].strip()): continue
            if list(data) == ['text/plain'] and _re_widget_repr.match(data['text/plain']):
                continue   # a widget saved without its static copy: its text repr is not content (with one, HTML wins)
        outs.append(o)
    return outs

# ---------------------------------------------------------------------------- notebook -> page

def process_notebook(src:Path, rel:Path, link:Linker) -> dict:
    "A source notebook as the site's notebook (nbformat JSON), without running anything."
    nb = json.loads(src.read_text(encoding='utf-8'))
    module = default_exp(nb['cells'])
    link.module = module
    page_id = re.sub(r'\W+', '-', rel.with_suffix('').as_posix())
    cells, done, counter, titled = [], set(), [0], False
    def md(s, **meta): cells.append(dict(cell_type='markdown', metadata=meta, source=s, id=f'{page_id}-{len(cells)}'[-64:]))
    for c in nb['cells']:
        s = _text(c['source'])
        if c['cell_type'] == 'markdown':
            if not titled and re.match(r'\s*#\s', s):   # nbdev's title cell: `# Title` then `> description`
                titled = True
                m = re.match(r'\s*(#\s[^\n]*)\n*(?:>\s*(.*?))?(\n\n.*)?$', s, re.S)
                head, desc, rest = m.group(1), m.group(2), m.group(3) or ''
                s = head + ('\n\n{.ftlab-lead}\n' + re.sub(r'\n>\s*', ' ', desc.strip()) if desc else '') + rest
                md(link(s))
                if module: md(f'```{{py:module}} {PACKAGE}.{module}\n```')   # the module's target (`{py:mod}` links, search)
                continue
            md(link(s)); continue
        if c['cell_type'] != 'code': continue
        opts, code = cell_options(s)
        if 'default_exp' in opts or 'hide' in opts or is_false(opts.get('include', 'true')) or 'exporti' in opts: continue
        exported = 'export' in opts or 'exports' in opts
        if exported and module:
            names = defined_names(code)
            mod = opts.get('export') or opts.get('exports') or module
            api = api_entries(mod.split()[0] if mod else module, names, link, done)
            if 'exports' in opts and code.strip(): cells.append(code_cell(code, [], page_id, len(cells), {}))
            if api: md(api)
            continue
        tags = []
        if is_false(opts.get('echo', 'true')): tags.append('remove-input')
        outs = [] if is_false(opts.get('output', 'true')) else clean_outputs(c.get('outputs', []), page_id, counter)
        if 'slow' in opts: tags.append('hide-input' if outs else 'hide-cell')   # refresh cells: results come first
        if not code.strip() and not outs: continue
        if 'remove-input' in tags and not outs: continue
        cells.append(code_cell(code, outs, page_id, len(cells), {'tags': tags} if tags else {}))
    meta = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
            'language_info': {'name': 'python', 'pygments_lexer': 'ipython3'}}
    return dict(cells=cells, metadata=meta, nbformat=4, nbformat_minor=5)

def code_cell(code, outs, page_id, i, meta):
    return dict(cell_type='code', execution_count=None, metadata=meta, outputs=outs, source=code,
                id=f'{page_id}-{i}'[-64:])

# ---------------------------------------------------------------------------- site

SECTIONS = [('0', 'Foundation'), ('1', 'Evaluation and the zoo'), ('2', 'Pillars'), ('3', 'Report and study'),
            ('4', 'Command line'), ('tutorials', 'Tutorials'), ('studies', 'Studies')]

def toctree(rels:list[Path]) -> str:
    "Hidden toctrees for the index page: the sidebar's sections, in the notebooks' order."
    out = []
    for key, caption in SECTIONS:
        docs = [r for r in rels if (r.parts[0] == key if len(r.parts) > 1 else len(r.parts) == 1 and r.stem[:1] == key
                                    and key.isdigit())]
        if docs:
            out.append('```{toctree}\n:hidden:\n:caption: ' + caption + '\n\n'
                       + '\n'.join(r.with_suffix('').as_posix() for r in docs) + '\n```')
    return '\n\n'.join(out)

CONF = '''# Generated by nbs/_site.py: Sphinx configuration of the ftlab docs site.
import inspect, importlib, os
project = {title!r}
author = {author!r}
copyright = {copyright!r}
html_title = {title!r}
extensions = ['myst_nb', 'sphinx_copybutton', 'sphinx.ext.linkcode']
nb_execution_mode = 'off'          # the notebooks' saved outputs; a docs build never runs a cell
nb_merge_streams = True
myst_enable_extensions = ['colon_fence', 'attrs_block', 'attrs_inline', 'dollarmath', 'deflist']
myst_heading_anchors = 4
html_theme = 'furo'
html_static_path = ['_static']
html_css_files = ['ftlab.css']
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
add_module_names = False
python_maximum_signature_line_length = 80
toc_object_entries_show_parents = 'hide'
copybutton_exclude = '.linenos, .gp, .go'
suppress_warnings = ['mystnb.unknown_mime_type']
html_theme_options = dict(source_repository={git_url!r} + '/', source_branch={branch!r}, source_directory='nbs/',
                          top_of_page_buttons=['view'],
                          footer_icons=[dict(name='GitHub', url={git_url!r}, class_='',
                                             html='<svg viewBox="0 0 16 16" height="1em" width="1em" fill="currentColor"><path d="M8 0C3.58 0 0 3.58 0 8c0 3.54 2.29 6.53 5.47 7.59.4.07.55-.17.55-.38 0-.19-.01-.82-.01-1.49-2.01.37-2.53-.49-2.69-.94-.09-.23-.48-.94-.82-1.13-.28-.15-.68-.52-.01-.53.63-.01 1.08.58 1.23.82.72 1.21 1.87.87 2.33.66.07-.52.28-.87.51-1.07-1.78-.2-3.64-.89-3.64-3.95 0-.87.31-1.59.82-2.15-.08-.2-.36-1.02.08-2.12 0 0 .67-.21 2.2.82.64-.18 1.32-.27 2-.27.68 0 1.36.09 2 .27 1.53-1.04 2.2-.82 2.2-.82.44 1.1.16 1.92.08 2.12.51.56.82 1.27.82 2.15 0 3.07-1.87 3.75-3.65 3.95.29.25.54.73.54 1.48 0 1.07-.01 1.93-.01 2.2 0 .21.15.46.55.38A8.013 8.013 0 0016 8c0-4.42-3.58-8-8-8z"></path></svg>')])

def linkcode_resolve(domain, info):
    "[source] links to the exported module on the repository."
    if domain != 'py' or not info.get('module'): return None
    try:
        obj = importlib.import_module(info['module'])
        for part in info['fullname'].split('.'): obj = getattr(obj, part)
        obj = inspect.unwrap(getattr(obj, 'fget', obj))
        lines, start = inspect.getsourcelines(obj)
    except Exception: return None
    path = info['module'].replace('.', '/') + '.py'
    return f'{git_url}/blob/{branch}/{{path}}#L{{start}}-L{{start + len(lines) - 1}}'

def add_plotly(app, pagename, templatename, context, doctree):
    "plotly.js (from _static, deferred) on the pages that draw a figure, and only there."
    if 'plotly-graph-div' in context.get('body', ''):
        app.add_js_file('plotly.min.js', loading_method='defer')

def setup(app):
    app.connect('html-page-context', add_plotly)
'''

CSS = """
/* ftlab additions to Furo */
.ftlab-lead { font-size: 1.15em; color: var(--color-foreground-secondary); margin-top: -.4em; }
/* wide outputs (tables, figures) scroll inside their box, never the page */
.cell_output, .output { max-width: 100%; overflow-x: auto; }
.cell_output .output.text_html { overflow-x: auto; }
.cell_output table.dataframe { font-size: .8em; border-collapse: collapse; }
.cell_output table.dataframe th, .cell_output table.dataframe td { padding: .2em .5em; border-bottom: 1px solid var(--color-background-border); text-align: right; }
.plotly-graph-div { max-width: 100%; }
dl.py > dd table { font-size: .88em; margin-left: 0; }
dl.py > dd table td:nth-child(4) { min-width: 14em; }
.ftlab-static { overflow-x: auto; }
"""

def build(out:Path, nbs:Path, cfg, jobs:int=2) -> list[Path]:
    "Process every notebook into _proc/ and run Sphinx into `out`; the pages written."
    import plotly.offline
    stage = cfg.config_path / '_proc'
    if stage.exists(): shutil.rmtree(stage)
    (stage / '_static').mkdir(parents=True)
    rels = sorted(source_notebooks(nbs), key=lambda r: (len(r.parts) > 1, r.stem != 'index', r.as_posix()))
    modules = [m for m in (default_exp(json.loads((nbs / r).read_text(encoding='utf-8'))['cells']) for r in rels) if m]
    link = Linker(modules)
    for rel in rels:
        nb = process_notebook(nbs / rel, rel, link)
        if rel.as_posix() == 'index.ipynb':
            nb['cells'].append(dict(cell_type='markdown', metadata={}, source=toctree([r for r in rels if r != rel]),
                                    id='index-toctree'))
        dest = stage / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding='utf-8')
    (stage / '_static' / 'plotly.min.js').write_text(plotly.offline.get_plotlyjs(), encoding='utf-8')
    (stage / '_static' / 'ftlab.css').write_text(CSS)
    (stage / 'conf.py').write_text(CONF.format(title=cfg.title, author=cfg.author, copyright=cfg.copyright,
                                                 git_url=cfg.git_url, branch=cfg.get('branch', 'main')))
    if out.exists() and not (out / MARKER).exists() and any(out.iterdir()):
        sys.exit(f'{out} exists and was not made by {Path(__file__).name}; remove it or choose --out')
    work = out.with_name(out.name + '.building')   # built aside, then swapped in: a failed build leaves `out` as it was
    shutil.rmtree(work, ignore_errors=True)
    tmp = work / 'html'                              # (myst-nb also writes jupyter_execute/ next to its output folder)
    sphinx = Path(sys.executable).parent / 'sphinx-build'
    r = subprocess.run([str(sphinx), '-b', 'html', '-q', '-W', '--keep-going', '-j', str(jobs), '-d',
                        str(stage / '.doctrees'), str(stage), str(tmp)], cwd=ROOT)
    if r.returncode:
        shutil.rmtree(work, ignore_errors=True)
        sys.exit(f'sphinx-build failed (exit {r.returncode}); see the warnings above')
    (tmp / MARKER).write_text('built by nbs/_site.py\n')
    (tmp / '.nojekyll').write_text('')
    if out.exists(): shutil.rmtree(out)
    tmp.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    return [r.with_suffix('.html') for r in rels]

# ---------------------------------------------------------------------------- README, execution

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
    ap.add_argument('--jobs', type=int, default=2, help='Sphinx processes (default 2)')
    a = ap.parse_args(argv)
    t0 = time.time()
    os.chdir(ROOT)
    from nbdev.config import get_config
    cfg = get_config()
    out = Path(a.out) if Path(a.out).is_absolute() else ROOT / a.out
    if a.execute is not None: execute(cfg.nbs_path, a.execute, a.slow)
    readme(cfg.nbs_path, ROOT / 'README.md'); print('README.md written from nbs/index.ipynb')
    if a.readme: return
    pages = build(out, cfg.nbs_path, cfg, a.jobs)
    print(f'{len(pages)} pages in {out} in {time.time() - t0:.1f}s (Sphinx + myst-nb + Furo; open {out}/index.html)')

if __name__ == '__main__': main()
