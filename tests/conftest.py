"pytest options for ftlab's tests: `--runslow` also runs the tests marked `slow` (make test-all passes it)."
import pytest

def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False, help='also run the tests marked slow')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a long test, run by make test-all (pytest --runslow)')

def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'): return
    skip = pytest.mark.skip(reason='slow: run with --runslow (make test-all)')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
