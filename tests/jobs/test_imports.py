import subprocess
import sys

WEB_SAFE_MODULES = (
    "jobs",
    "jobs.spec",
    "jobs.backbones",
    "jobs.datasets",
    "jobs.images",
    "jobs.splits",
    "jobs.stats",
    "jobs.model",
    "jobs.training",
)


def test_web_facing_modules_do_not_load_keras_or_tensorflow():
    imports = "; ".join(f"import {module}" for module in WEB_SAFE_MODULES)
    check = f"{imports}; import sys; print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
