"""A flow's parameters read from its source, without importing the flow.

Importing a flow module loads Prefect and torch (seconds); the command only needs the signature
to build its options and check its input. Like Prefect's own ``safe_load_flow_from_entrypoint``,
the signature is parsed from the source: the ``@flow(name=...)`` function, each parameter's
annotation (evaluated against flows.parameters and typing, the only names a flow signature may
use), its literal default and the docstring. tests/flows/test_cli.py checks that it equals the
signature Prefect sees.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import TypeAdapter, ValidationError

import flows.parameters

REQUIRED = object()  # the default of a parameter without one
SET_BY_COMMAND = ("progress",)  # flow parameters the command sets itself, never options


@dataclass(frozen=True)
class FlowParameter:
    """One parameter of a flow: its name, its full annotation (with constraints and markers) and
    its default (REQUIRED if none)."""

    name: str
    annotation: Any
    default: Any

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def metadata(self) -> list:
        """The Annotated metadata, outermost last (nested Annotated types flattened)."""
        return list(getattr(self.annotation, "__metadata__", ()))

    @property
    def help(self) -> str:
        return flows.parameters.help_text(self.annotation)

    @property
    def value_type(self) -> Any:
        """The annotation without Annotated and without ``| None``."""
        base = typing.get_args(self.annotation)[0] if self.metadata else self.annotation
        if typing.get_origin(base) in (typing.Union, types.UnionType):
            base = next(a for a in typing.get_args(base) if a is not type(None))
        return _bare(base)

    @property
    def item_type(self) -> Any | None:
        """For a list parameter, the type of its items (without Annotated); else None."""
        if typing.get_origin(self.value_type) is not list:
            return None
        return _bare(typing.get_args(self.value_type)[0])

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The allowed names of a Literal parameter (or of a list of them)."""
        scalar = self.item_type or _bare(self.value_type)
        return typing.get_args(scalar) if typing.get_origin(scalar) is Literal else None

    @property
    def must_exist(self) -> bool:
        return any(isinstance(m, flows.parameters.MustExist) for m in _all_metadata(self.annotation))

    @property
    def group(self) -> flows.parameters.OneOf | None:
        return next((m for m in self.metadata if isinstance(m, flows.parameters.OneOf)), None)

    def check(self, value: Any) -> Any:
        """The value validated against the annotation's type and constraints (ValueError naming
        the constraint), and, for a local path that must exist, against the disk."""
        try:
            value = TypeAdapter(self.annotation).validate_python(value)
        except ValidationError as error:
            first = error.errors()[0]
            raise ValueError(f"{first['msg'][0].lower()}{first['msg'][1:]} (got {value!r})") from None
        if self.must_exist and value is not None and "://" not in value and not os.path.exists(value):
            raise ValueError(f"{value} does not exist")
        return value


@dataclass(frozen=True)
class FlowSignature:
    """A flow's name (``@flow(name=...)``), its function's name in its module, the first
    paragraph of its docstring and its parameters in order."""

    flow_name: str
    function_name: str
    description: str
    parameters: tuple[FlowParameter, ...]

    @property
    def options(self) -> tuple[FlowParameter, ...]:
        """The parameters a command line or config file gives (all but SET_BY_COMMAND)."""
        return tuple(p for p in self.parameters if p.name not in SET_BY_COMMAND)


def _bare(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if hasattr(annotation, "__metadata__") else annotation


def _all_metadata(annotation: Any) -> list:
    """Annotated metadata anywhere in the annotation (``ExistingPath | None`` included)."""
    found = list(getattr(annotation, "__metadata__", ()))
    for arg in typing.get_args(annotation):
        found += _all_metadata(arg)
    return found


def _namespace() -> dict:
    namespace = {name: getattr(flows.parameters, name) for name in dir(flows.parameters) if not name.startswith("_")}
    namespace.update(Annotated=Annotated, Literal=Literal)
    return namespace


def read_flow_signature(module: str) -> FlowSignature:
    """The signature of the one ``@flow``-decorated function in ``module`` (a dotted module name),
    from its source file; the module is not imported."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=spec.origin)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            flow_name = _flow_name(node)
            if flow_name:
                return FlowSignature(flow_name, node.name, (ast.get_docstring(node) or "").split("\n\n")[0],
                                     tuple(_parameters(node, spec.origin)))
    raise LookupError(f"{spec.origin}: no @flow(name=...) function")


def _flow_name(node: ast.FunctionDef) -> str | None:
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "flow":
            for keyword in decorator.keywords:
                if keyword.arg == "name":
                    return ast.literal_eval(keyword.value)
    return None


def _parameters(node: ast.FunctionDef, path: str) -> list[FlowParameter]:
    arguments = node.args.args + node.args.kwonlyargs
    defaults = ([REQUIRED] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                + [REQUIRED if d is None else d for d in node.args.kw_defaults])
    namespace = _namespace()
    parameters = []
    for argument, default in zip(arguments, defaults):
        where = f"{path}:{argument.lineno} parameter {argument.arg}"
        if argument.annotation is None:
            raise TypeError(f"{where}: a flow parameter needs a type")
        try:
            annotation = eval(compile(ast.Expression(argument.annotation), path, "eval"), namespace)  # noqa: S307
        except NameError as error:
            raise TypeError(f"{where}: {error}; a flow signature may use only the names of flows.parameters "
                            f"and typing.Annotated / Literal") from error
        try:
            value = default if default is REQUIRED else ast.literal_eval(default)
        except ValueError:
            # arithmetic of literals, e.g. 2.0 / 3.0 (our own source, evaluated without builtins)
            value = eval(compile(ast.Expression(default), path, "eval"), {"__builtins__": {}})  # noqa: S307
        parameters.append(FlowParameter(argument.arg, annotation, value))
    return parameters
