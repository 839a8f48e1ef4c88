"""One module per op: its validation, capability check, kernel launches and fallbacks, declared
once with `launcher.op.define`. Importing this package imports (and so registers) every op
module in it: a new op needs no other registration."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
