"""Start-up machinery of the root command (cli/main.py): lazily built commands, light coercion.

`backupctl --version`, `--help`, TAB completion and `backup list` are benchmarked
(bench/startup.py; tests/cli/test_startup.py checks the modules they import). Two things keep
them fast: a group's commands are built only when one is used (`LazyCommands`, listed by
`ListingGroup` from their short helps without building them), and the global options are
coerced without importing Pydantic (`skip_trivial_coercion`). Which commands exist and
which module each lives in is cli/main.py's business; this module only knows how to defer
building them. It imports nothing beyond Typer/Click, which every run loads anyway.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from typer.core import TyperCommand, TyperGroup


class LazyCommands(MutableMapping[str, Any]):
    """A group's `commands`: the names are known up front (what listing them and typo
    suggestions use), a lazy command is built on first access (running it, its help, or
    docgen). Iteration keeps the order: the loaded ones, then the lazy ones, unless `order`
    names them in the order to list them. `lazy` maps a name to (the function that builds
    the command, its short help for listings)."""

    def __init__(
        self,
        loaded: Mapping[str, Any],
        lazy: Mapping[str, tuple[Callable[[], Any], str]],
        order: Sequence[str] = (),
    ) -> None:
        self._loaded = dict(loaded)
        self._lazy = {n: entry for n, entry in lazy.items() if n not in self._loaded}
        rank = {name: i for i, name in enumerate(order)}  # the names not in it keep their place after
        self._order = sorted([*self._loaded, *self._lazy], key=lambda n: rank.get(n, len(rank)))

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            load, _ = self._lazy.pop(name)  # KeyError: no such command
            self._loaded[name] = load()
        return self._loaded[name]

    def stand_in(self, name: str) -> Any:
        """For listings: a command not built yet, with its name and short help only."""
        if name in self._lazy:
            return TyperCommand(name=name, help=self._lazy[name][1])
        return self.get(name)

    def __setitem__(self, name: str, command: Any) -> None:
        self._lazy.pop(name, None)
        if name not in self._loaded:
            self._order.append(name)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._loaded and name not in self._lazy:
            raise KeyError(name)
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)
        self._order.remove(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)


class _TrivialCoercion:
    """Coercion of a str or bool parameter without Pydantic: None and a value that already
    has the type are returned as they are (what the TypeAdapter returns for them); anything
    else goes to Typer's own coercion."""

    def __init__(self, param: Any, kinds: tuple[type, ...]) -> None:
        self._typer_coercion = param.get_runtime_param
        self._kinds = kinds

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or isinstance(value, self._kinds):
            return value
        if list in self._kinds and isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            return list(value) or None  # a repeatable str option; not given: None, as Typer does
        return self._typer_coercion().coerce(value, param=param, ctx=ctx)


_TRIVIAL = {
    str: (str,),
    str | None: (str,),
    bool: (bool,),
    bool | None: (bool,),
    list[str]: (list,),  # a repeatable str option (Typer drops the `| None`)
}


def skip_trivial_coercion(param: Any) -> None:
    """Typer coerces every parameter value through a Pydantic TypeAdapter (bool flags that
    are already bools excepted). The global options (and --help) are processed on every
    run, TAB completion included, and importing Pydantic for them costs ~0.15 s of CPU;
    their values need no coercion (see _TrivialCoercion)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or "get_runtime_param" in vars(param):
        return
    kinds = _TRIVIAL.get(descriptor.annotation)
    plain = getattr(descriptor.parameter_info, "parser", None) is None  # no custom parser
    if kinds is not None and plain and (param.multiple == (list in kinds)) and param.nargs == 1:
        coercion = _TrivialCoercion(param, kinds)
        param.get_runtime_param = lambda: coercion


class ListingGroup(TyperGroup):
    """A group whose `commands` may be a LazyCommands: listing them (`--help`, TAB on a
    command name) shows the short helps of the lazy ones without building them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if self._listing and isinstance(self.commands, LazyCommands):
            return self.commands.stand_in(cmd_name)
        return self.commands.get(cmd_name)

    @contextmanager
    def _names_only(self) -> Iterator[None]:
        self._listing = True
        try:
            yield
        finally:
            self._listing = False

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with self._names_only():
            super().format_commands(ctx, formatter)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        with self._names_only():
            return super().shell_complete(ctx, incomplete)


# -- cyclic garbage collection during start-up ----------------------------------------------------
#
# Start-up creates a few hundred thousand objects (modules, Typer and Pydantic schemas) that
# live until exit, and the cyclic collector walks them again and again as they are made, and
# once more when the interpreter exits: about 30 + 40 ms of a 0.3 s `backup create`, measured
# with `python -c 'import ...'` (docs/performance.md, "Start-up"). So `run()` starts with the
# collector off and `startup_done()` (called once a command has loaded what it needs: the
# config, see cli/context.py) freezes what exists, which no collection then walks, and turns
# the collector back on for the command's own work. Only run() turns it off: a process that
# imports backupctl (a test) keeps its collector as it is.

_GC_PAUSED = False


def pause_gc() -> None:
    global _GC_PAUSED
    if gc.isenabled():
        gc.disable()
        _GC_PAUSED = True


def startup_done() -> None:
    global _GC_PAUSED
    if _GC_PAUSED:
        _GC_PAUSED = False
        gc.freeze()
        gc.enable()


def exiting() -> None:
    """For run(), when the command returned: what is left need not be walked by the
    interpreter's final collection."""
    gc.freeze()
