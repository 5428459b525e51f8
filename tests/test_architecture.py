"""The layers stay apart: the web app loads no worker or ML machinery, and no module imports itself
back through others (docs/architecture.md)."""
import subprocess
import sys

import grimp

PRODUCT_PACKAGES = ("dashboard", "worker", "db", "jobs", "tlbench", "config")
# Highest first: a package may import those below it, never those above (docs/architecture.md).
LAYERS = ("tlbench", "dashboard", "worker", "db", "config", "jobs")
# What a process that only serves HTTP and sends messages must not load: Celery's worker (its bootsteps
# and consumer), the device probes of the worker heartbeat, and the ML frameworks.
WORKER_OR_ML_MODULES = ("celery.worker", "celery.bootsteps", "celery.apps", "psutil", "pynvml",
                        "keras", "tensorflow", "jax")


def heavy_modules_loaded_by(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; the worker or ML modules it left in sys.modules."""
    report = ("import sys; print(sorted(m for m in sys.modules "
              f"if m in {WORKER_OR_ML_MODULES!r} or m.startswith(tuple(p + '.' for p in {WORKER_OR_ML_MODULES!r}))))")
    result = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True, check=True)
    return eval(result.stdout.strip().splitlines()[-1])


def test_importing_the_api_loads_no_celery_worker_device_probe_or_keras():
    assert heavy_modules_loaded_by("import dashboard.api") == []


def test_a_started_web_app_loads_no_celery_worker_device_probe_or_keras(tmp_path):
    code = ("from config.settings import load_settings; from dashboard import create_app\n"
            f"app = create_app({{'TLBENCH_SETTINGS': load_settings({{'TLBENCH_HOME': {str(tmp_path)!r}}})}})\n"
            "assert app.test_client().get('/api/v1/backbones').status_code == 200")
    assert heavy_modules_loaded_by(code) == []


def import_circles(graph) -> list[tuple[str, ...]]:
    """Each circle once, as the chain of modules from one module back to itself (lazy imports count)."""
    circles = {}
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                circles.setdefault(frozenset(chain), (module, *chain))
    return list(circles.values())


def test_no_product_module_imports_itself_back_through_others():
    graph = grimp.build_graph(*PRODUCT_PACKAGES)
    assert import_circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("a.one", "a.two", "a.three"):
        graph.add_module(module)
    graph.add_import(importer="a.one", imported="a.two")
    graph.add_import(importer="a.two", imported="a.three")
    graph.add_import(importer="a.three", imported="a.one")
    assert import_circles(graph) == [("a.one", "a.two", "a.three", "a.one")]


def test_imports_go_down_the_layers_only():
    graph = grimp.build_graph(*PRODUCT_PACKAGES)
    upward = graph.find_illegal_dependencies_for_layers(layers=LAYERS)
    assert [(dependency.importer, dependency.imported, dependency.routes) for dependency in upward] == []


def test_the_web_app_reaches_the_workers_only_through_the_queues_module():
    graph = grimp.build_graph(*PRODUCT_PACKAGES)
    imported = {found["imported"] for found in graph.find_matching_direct_imports(
        import_expression="dashboard.** -> worker.**")}
    assert imported == {"worker.queues"}
