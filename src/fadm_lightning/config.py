"""Where every command finds its Hydra configs: inside the package (``fadm_lightning/conf``; the
repository's ``conf/`` is a link to it), through Hydra's ``pkg://`` search path. This works from
any folder, for an editable install, a ``pip install .`` and a wheel imported as a zip.

* :func:`hydra_main` (``@hydra_main("train")``) makes a command of a task function;
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


def hydra_main(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[..., Any]]:
    """``@hydra.main`` with the package's configs (``config_name``: ``"train"``, …), accepting
    ``GROUP=null`` on the command line (:func:`null_groups_to_deletions`)."""
    import hydra

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[..., Any]:
        app = hydra.main(
            version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name=config_name
        )
        app = app(task)

        @functools.wraps(task)
        def main(cfg_passthrough: DictConfig | None = None) -> Any:
            if cfg_passthrough is None:  # a command line: Hydra parses sys.argv
                sys.argv[1:] = null_groups_to_deletions(sys.argv[1:])
            return app(cfg_passthrough)

        return main

    return decorate


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
