"""One generic registry for every kind of component a suite can name.

A component is a class registered under a snake_case name with a decorator. Its constructor's keyword
parameters (with annotations and defaults) are the parameters a suite may set; its docstring's first line is
the one-line doc `lossbench list` prints. A suite may also name a custom class as `package.module:Attr`: before
anything calls it, that class is checked against the kind's contract (its base class and the methods a subclass
must define), without instantiating it. Importing the module runs its top-level code, as `import` in a script does.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, get_type_hints

from pydantic import TypeAdapter, ValidationError

from lossbench.errors import ConfigError, UnknownComponentError, did_you_mean
from lossbench.schema_messages import plain_message, show_value

T = TypeVar("T")

_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class ParamInfo:
    """One constructor parameter of a component."""

    name: str
    annotation: str
    default: Any
    required: bool


@dataclass(frozen=True)
class ComponentInfo:
    """What `lossbench list` shows of a component."""

    kind: str
    name: str
    doc: str
    params: tuple[ParamInfo, ...]


def _type_name(annotation: Any) -> str:
    if annotation is _EMPTY:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _first_doc_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass(frozen=True)
class Contract:
    """What a custom class must be to stand for a component of one kind: a subclass of `base` that defines (overrides)
    each method in `methods`. `text` is the contract in words, shown when a class fails it."""

    base: type
    methods: tuple[str, ...]
    text: str

    def check(self, path: str, singular: str, cls: type) -> None:
        """Raise a ConfigError unless `cls` satisfies the contract; never instantiates or calls `cls`."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            found = f"class {cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else type(cls).__name__
            raise ConfigError(
                message=f"custom {singular} '{path}' is not a {singular}: it is a {found}",
                value=path,
                details=[self.text],
            )
        missing = [m for m in self.methods if getattr(cls, m, None) is getattr(self.base, m, None)]
        if missing:
            raise ConfigError(
                message=f"custom {singular} '{path}' does not define {', '.join(f'{m}()' for m in missing)}",
                value=path,
                details=[self.text],
            )


class Registry(Generic[T]):
    """Named components of one kind (losses, models, ...), with did-you-mean on unknown names.

    `contract` is what a custom `package.module:Attr` class must satisfy to be used as this kind.
    """

    def __init__(self, kind: str, singular: str, contract: Contract | None = None):
        self.kind = kind
        self.singular = singular
        self.contract = contract
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: `@LOSSES.register("focal")`."""

        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.singular} {name!r} is registered twice")
            self._entries[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def __contains__(self, name: str) -> bool:
        return name in self._entries or _is_import_path(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        """The class registered under `name`, or the class a `package.module:Attr` path names."""
        if name in self._entries:
            return self._entries[name]
        if _is_import_path(name):
            cls = _import_component(name, self.singular)
            self.check_custom(name, cls)
            return cls
        raise UnknownComponentError(
            message=f"unknown {self.singular} '{name}'",
            value=name,
            allowed=self.names(),
            suggestion=did_you_mean(name, self._entries),
        )

    def check_custom(self, path: str, cls: type) -> None:
        """Raise a ConfigError unless the class a custom path names may stand for this kind (not instantiated)."""
        if self.contract is None:
            raise ConfigError(message=f"a {self.singular} cannot be a custom class ('{path}')", value=path)
        self.contract.check(path, self.singular, cls)

    def params(self, name: str) -> tuple[ParamInfo, ...]:
        return component_params(self.get(name))

    def resolve_params(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validate `params` against the constructor of `name` and fill in every default.

        Types are checked and coerced with pydantic (so `1` becomes `1.0` for a float parameter); the returned
        dict holds every parameter, which is what cell ids hash, so `focal` and `focal(gamma=2.0)` are one cell.
        """
        cls = self.get(name)
        infos = {p.name: p for p in component_params(cls)}
        unknown = [k for k in params if k not in infos]
        if unknown:
            key = unknown[0]
            raise ConfigError(
                message=f"{self.singular} '{name}' has no parameter '{key}'",
                value=key,
                allowed=sorted(infos),
                suggestion=did_you_mean(key, infos),
                parameter=key,
            )
        hints = _hints(cls)
        resolved: dict[str, Any] = {}
        for pname, info in infos.items():
            if pname in params:
                value = params[pname]
                hint = hints.get(pname)
                if hint is not None:
                    problem = _bool_where_number(value, hint)
                    if problem is None:
                        try:
                            value = _adapter(hint).validate_python(value, strict=False)
                        except ValidationError as exc:
                            problem = plain_message(exc.errors()[0])
                    if problem is not None:
                        raise ConfigError(
                            message=f"{self.singular} '{name}': parameter '{pname}' {problem}",
                            value=params[pname],
                            parameter=pname,
                        ) from None
                resolved[pname] = _plain(value)
            elif info.required:
                raise ConfigError(
                    message=f"{self.singular} '{name}' needs parameter '{pname}' ({info.annotation})",
                    value=None,
                )
            else:
                resolved[pname] = _plain(info.default)
        return resolved

    def build(self, name: str, params: dict[str, Any]) -> T:
        """Instantiate `name` with validated `params`.

        A ValueError or TypeError from the constructor (a range check, say) becomes a ConfigError.
        """
        cls = self.get(name)
        resolved = self.resolve_params(name, params)
        try:
            return cls(**resolved)
        except (ValueError, TypeError) as exc:
            raise ConfigError(message=f"{self.singular} '{name}': {exc}", value=params) from exc
        except Exception as exc:
            if not _is_import_path(name):
                raise
            raise _constructor_error(self.singular, name, exc) from exc

    def check(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Resolve parameters and, where the class allows it, construct once to run its range checks."""
        resolved = self.resolve_params(name, params)
        cls = self.get(name)
        try:
            cls(**resolved)
        except (ValueError, TypeError) as exc:
            # Range checks name their parameter first ("padding must be >= 0"): point at that parameter.
            named = str(exc).split(" ", 1)[0]
            raise ConfigError(message=f"{self.singular} '{name}': {exc}", value=params,
                              parameter=named if named in params else None) from exc
        except Exception as exc:
            if not _is_import_path(name):
                raise
            raise _constructor_error(self.singular, name, exc) from None
        except SystemExit as exc:  # a user's class calling sys.exit() must not end validation silently
            if not _is_import_path(name):
                raise
            raise _constructor_error(self.singular, name, exc) from None
        return resolved

    def describe(self) -> list[ComponentInfo]:
        return [
            ComponentInfo(self.kind, n, _first_doc_line(self._entries[n]), component_params(self._entries[n]))
            for n in self.names()
        ]


def _constructor_error(singular: str, path: str, exc: BaseException) -> ConfigError:
    """A custom class's own constructor failed: say so in one line, the user's message included."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ConfigError(
        message=f"custom {singular} '{path}' raised {type(exc).__name__} in its constructor"
                + (f": {text}" if text else ""),
        value=path,
    )


@functools.lru_cache(maxsize=None)  # every cell builds its components: resolving hints each time cost ms per cell
def _hints(cls: type) -> dict[str, Any]:
    try:
        return get_type_hints(cls.__init__)
    except Exception:  # annotations that cannot be evaluated are simply not type-checked
        return {}


def _adapter(hint: Any) -> TypeAdapter[Any]:
    """pydantic's validator of `hint`, built once per hint (building one takes milliseconds)."""
    try:
        return _cached_adapter(hint)
    except TypeError:  # an unhashable annotation: build it each time
        return TypeAdapter(hint)


@functools.lru_cache(maxsize=None)
def _cached_adapter(hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(hint)


def _bool_where_number(value: Any, hint: Any) -> str | None:
    """pydantic's lax mode reads true as 1; a suite that writes `gamma: true` means something else."""
    def has_bool(v: Any) -> bool:
        return isinstance(v, bool) or (isinstance(v, (list, tuple)) and any(has_bool(x) for x in v))

    if has_bool(value) and "bool" not in str(hint) and hint is not Any:
        return f"must be {_type_name(hint)}, not true/false (got {show_value(value)})"
    return None


def _plain(value: Any) -> Any:
    """Tuples become lists so that resolved parameters round-trip through JSON and YAML unchanged."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def component_params(cls: type) -> tuple[ParamInfo, ...]:
    """The suite-settable parameters of a component class: keyword parameters of its constructor."""
    hints = _hints(cls)
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = hints.get(p.name, p.annotation)
        out.append(ParamInfo(p.name, _type_name(ann), None if p.default is _EMPTY else p.default, p.default is _EMPTY))
    return tuple(out)


def add_import_dir(directory: Path) -> None:
    """Let custom `module:Attr` names import modules from `directory` (a suite's own folder).

    It is searched after the installed packages, so a user's file never shadows a module lossbench itself uses.
    """
    entry = str(Path(directory).resolve())
    if entry not in _SUITE_DIRS:
        _SUITE_DIRS.append(entry)
    if entry not in sys.path:
        sys.path.append(entry)


#: Suite folders added to the import path, named in the hint when a custom module is not found.
_SUITE_DIRS: list[str] = []


def _is_import_path(name: str) -> bool:
    return ":" in name and all(part for part in name.split(":", 1))


def _import_component(path: str, singular: str) -> type:
    module_name, attr = path.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        details = []
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
            where = f" ({', '.join(_SUITE_DIRS)})" if _SUITE_DIRS else ""
            details.append(f"custom modules are imported from the folder beside the suite{where} and from the "
                           f"installed packages: put {exc.name}.py there, or install it")
        raise UnknownComponentError(
            message=f"cannot import module '{module_name}' for custom {singular} '{path}': "
                    f"{type(exc).__name__}: {exc}",
            value=path, details=details,
        ) from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        public = [n for n in dir(module) if not n.startswith("_")]
        raise UnknownComponentError(
            message=f"module '{module_name}' has no attribute '{attr}' (custom {singular})",
            value=path,
            suggestion=did_you_mean(attr, public),
        ) from None
    if not inspect.isclass(obj):
        raise UnknownComponentError(message=f"custom {singular} '{path}' is not a class", value=path)
    return obj
