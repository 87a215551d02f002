"""Where every command finds its Hydra configs: inside the package (``fadm_lightning/conf``; the
repository's ``conf/`` is a link to it), through Hydra's ``pkg://`` search path. This works from
any folder, for an editable install, a ``pip install .`` and a wheel imported as a zip.

* :func:`hydra_main` (``@hydra_main("train")``) makes a command of a task function: every
  ``python -m fadm_lightning.<command>`` and ``python -m fadm_lightning.benchmarks.<name>`` is
  one (their configs: ``conf/<command>.yaml``, ``conf/benchmark/<name>.yaml``);
* :func:`quote` quotes a value for a ``key=value`` override of another command's line;
* :func:`compose_config` composes a config in Python (benchmarks, notebooks, tests).

Machine-local settings: ``conf/local/default.yaml`` in a checkout (git ignores it, the wheel
leaves it out); with an installed package, ``--config-dir DIR`` with ``DIR/local/default.yaml``.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any

from omegaconf import DictConfig

#: the package that holds the configs
CONFIG_MODULE = "fadm_lightning.conf"
#: ``config_path`` of ``@hydra.main``
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
#: the Hydra version whose defaults the configs are written for
VERSION_BASE = "1.3"

_GROUP_KEY = re.compile(r"[A-Za-z_][\w-]*(/[A-Za-z_][\w-]*)*")


def is_config_group(name: str) -> bool:
    """Whether ``name`` (``"logger"``, ``"model/unet"``) is a config group of the package."""
    if not _GROUP_KEY.fullmatch(name):
        return False
    try:
        return resources.files(CONFIG_MODULE).joinpath(name).is_dir()
    except (ModuleNotFoundError, OSError):
        return False


def null_groups_to_deletions(args: Sequence[str]) -> list[str]:
    """``GROUP=null`` → ``~GROUP`` for the config groups of the package (``logger=null``: no
    logger). Hydra ≥ 1.1 refuses ``null`` as a group choice; every other argument is unchanged."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and value.strip().lower() == "null" and is_config_group(key):
            arg = f"~{key}"
        out.append(arg)
    return out


def hydra_main(
    config_name: str,
    *,
    errors: Callable[[Callable[[], Any]], Any] | None = None,
    threads: str | None = "num_threads",
) -> Callable[[Callable[[DictConfig], Any]], Callable[..., Any]]:
    """The entry of every command: ``@hydra.main`` with the package's configs (``config_name``:
    ``"train"``, ``"benchmark/speed"``, …), accepting ``GROUP=null`` on the command line
    (:func:`null_groups_to_deletions`).

    * ``threads``: the config key of the torch CPU thread count, applied before the task when it
      is set (``None``: the task sets its threads itself);
    * ``errors``: runs the task's body and turns its expected errors into an exit status, e.g.
      ``functools.partial(inference.cli.run_command, NAME)`` (a missing file, an unreadable
      video, no face, … end the command with ``NAME: error: message`` on stderr and status 1
      instead of a traceback);
    * an ``int`` the task returns is the command's exit status (non-zero ends the process).

    The decorated ``main`` runs the command line (``main()``), a composed config
    (``main(cfg)``) or a list of overrides (``main(["frames=2", "tiny=true"])``, for tests and
    notebooks: composed like :func:`compose_config`, the task's value is returned instead of
    ending the process, and torch's thread count is restored afterwards).
    """
    import hydra

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[..., Any]:
        def body(cfg: DictConfig) -> Any:
            if threads is not None and cfg.get(threads):
                import torch

                torch.set_num_threads(int(cfg[threads]))
            return task(cfg) if errors is None else errors(lambda: task(cfg))

        def command(cfg: DictConfig) -> Any:
            result = body(cfg)
            if isinstance(result, int) and not isinstance(result, bool) and result:
                raise SystemExit(result)
            return result

        app = hydra.main(
            version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name=config_name
        )(command)

        @functools.wraps(task)
        def main(cfg_or_overrides: DictConfig | Sequence[str] | None = None) -> Any:
            if cfg_or_overrides is None:  # a command line: Hydra parses sys.argv
                sys.argv[1:] = null_groups_to_deletions(sys.argv[1:])
                return app()
            if isinstance(cfg_or_overrides, DictConfig):
                return app(cfg_or_overrides)
            import torch

            before = torch.get_num_threads()
            try:
                return body(compose_config(config_name, cfg_or_overrides))
            finally:
                torch.set_num_threads(before)

        main.config_name = config_name  # type: ignore[attr-defined]
        return main

    return decorate


def quote(value: Any) -> str:
    """``value`` as a single-quoted Hydra override value: a path with ``=`` or ``,`` in it
    (``epoch=3-step=100.ckpt``) or an override inside a list (``overrides=['data.x=4']``)."""
    text = str(value).replace("'", "\\'")  # other backslashes stay as they are
    return f"'{text}'"


def compose_config(
    config_name: str, overrides: Iterable[str] = (), return_hydra_config: bool = False
) -> DictConfig:
    """Compose ``config_name`` (``"train"``, ``"evaluate"``, …) of the package with ``overrides``.

    Hydra's global state is cleared before and after, so this can be called repeatedly and
    from inside a running Hydra app's process."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base=VERSION_BASE):
            return compose(
                config_name=config_name,
                overrides=null_groups_to_deletions(list(overrides)),
                return_hydra_config=return_hydra_config,
            )
    finally:
        GlobalHydra.instance().clear()
