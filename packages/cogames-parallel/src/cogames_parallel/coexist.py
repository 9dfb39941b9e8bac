"""Our ``cogames`` and upstream CoGames' ``cogames`` in one environment.

Both distributions declare a ``cogames`` console script, so ``bin/cogames`` belongs to
whichever was installed last (uv installs in parallel: either can win). To make
``cogames eval`` ours whichever file is there, the ``cogames_parallel_coexist.pth`` file
(installed next to our package) calls :func:`install` when, and only when, the running
program is a ``cogames`` console script. It adds an import hook that, once upstream's
``cogames.main`` module has run, keeps its Typer app as ``upstream_app`` and puts our
:func:`cogames_parallel.cli.main` in its place as ``app``. Upstream's script does
``sys.exit(app())``, so it then runs our CLI, and our CLI hands every subcommand it does
not implement (play, replay, login, ...) back to ``upstream_app``.

Nothing else is touched: ``import cogames.main`` in library code, ``python -m cogames``
and every other program see upstream unchanged.
"""

from __future__ import annotations

import importlib.abc
import sys

UPSTREAM_MODULE = "cogames.main"


def _our_main() -> int:
    from cogames_parallel.cli import main

    return main()


class _UpstreamAppHook(importlib.abc.MetaPathFinder):
    """Finds ``cogames.main`` through the other finders and patches it after it runs."""

    def find_spec(self, fullname, path, target=None):
        if fullname != UPSTREAM_MODULE:
            return None
        sys.meta_path.remove(self)  # once is enough, and never recurse into ourselves
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is not None:
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            module.upstream_app = module.app
            module.app = _our_main

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Make upstream's ``cogames`` script run our CLI (see the module docstring)."""
    if not any(isinstance(f, _UpstreamAppHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _UpstreamAppHook())


def upstream_app():
    """Upstream CoGames' own Typer app (unpatched), or None when it is not installed."""
    try:
        import cogames.main as upstream_main
    except ImportError:
        return None
    return getattr(upstream_main, "upstream_app", upstream_main.app)


def run_upstream(argv: list[str]) -> int:
    """Run upstream CoGames' CLI with ``argv`` (as ``cogames ARGV...``) and return its exit code."""
    app = upstream_app()
    if app is None:
        raise ImportError("upstream CoGames is not installed")
    saved = sys.argv
    sys.argv = ["cogames", *argv]
    try:
        result = app(args=list(argv), prog_name="cogames")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return result if isinstance(result, int) else 0
