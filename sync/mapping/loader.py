"""Read a mapping file: YAML with line numbers, ``${VAR}`` secrets, typed model, parsed rules.

``load(path)`` returns a ``Project`` or raises ``ConfigError`` listing every problem found, each
naming file:line, the path in the document and a fix. No network, no store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError, Problem
from ..logs import secret
from .model import Condition, DestinationConfig, Mapping, did_you_mean, parse_condition
from .yaml_limits import check_graph, read_text


class YamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present
    """YAML 1.2 booleans: only true/false (so `on:` and `no` stay strings, as users mean)."""


YamlLoader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool",
                                 re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """A YAML date; one that does not exist (``2026-13-45``, ``2026-02-30``) stays text, so the
    model reports it with its path in the document, as it does the quoted form."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)


class _Written:
    """A YAML number that remembers how it was written: compared with a string field,
    ``eq: 02134`` means the text "02134", not the number."""

    text: str

    def __str__(self) -> str:
        return self.text


class _Int(_Written, int):
    pass


class _Float(_Written, float):
    pass


def _number(kind: type, base: Any) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        text = loader.construct_scalar(node)
        if kind is _Int and re.fullmatch(r"[-+]?0[0-9]+", text):
            value = int(text, 10)  # a leading zero is not octal (YAML 1.2)
        else:
            value = base(loader, node)
        out = kind(value)
        out.text = text
        return out
    return construct


YamlLoader.add_constructor("tag:yaml.org,2002:int",
                           _number(_Int, yaml.SafeLoader.construct_yaml_int))
YamlLoader.add_constructor("tag:yaml.org,2002:float",
                           _number(_Float, yaml.SafeLoader.construct_yaml_float))

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def fmt_path(parts: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


@dataclass
class Project:
    """A loaded mapping: the typed model plus where everything stands in the file."""

    mapping: Mapping
    path: Path
    lines: dict[str, int] = field(default_factory=dict)
    conditions: dict[str, Condition] = field(default_factory=dict)  # "segments.X" -> where
    env_vars: dict[str, str] = field(default_factory=dict)  # document path -> ${VAR} name

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, rel: str | Path) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def store_path(self) -> Path:
        return self.resolve(self.mapping.store)

    @property
    def name(self) -> str:
        """The mapping's name: ``name:``, else the file name without its extension (so
        ``acme.yaml`` in two folders is one mapping, run by two runners)."""
        return self.mapping.name or self.path.stem

    def line(self, path: str) -> int | None:
        """Line of ``path`` or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def problem(self, path: str, message: str, fix: str | None = None,
                severity: str = "error") -> Problem:
        return Problem(path, message, fix, str(self.path), self.line(path), severity)

    def where(self, segment: str) -> Condition | None:
        return self.conditions.get(f"segments.{segment}.where")

    def segments_of(self, dest: DestinationConfig) -> list[str]:
        """The segments a destination sends: its segment, or its group's, in order."""
        return [dest.segment] if dest.segment else list(self.mapping.groups[dest.group].segments)

    def source_of(self, section: str, name: str) -> str:
        """The source a segment / score / suppression reads (the only one unless named)."""
        item = getattr(self.mapping, section)[name]
        return getattr(item, "source", None) or next(iter(self.mapping.sources))


# ---------------------------------------------------------------- YAML with lines


def _line_map(node: yaml.Node, path: tuple, lines: dict[str, int], problems: list[Problem],
              file: str) -> None:
    lines[fmt_path(path)] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = k.value
            if key in seen:
                problems.append(Problem(fmt_path((*path, key)), f"duplicate key '{key}'",
                                        "keep one of them", file, k.start_mark.line + 1))
            seen.add(key)
            lines[fmt_path((*path, key))] = k.start_mark.line + 1
            _line_map(v, (*path, key), lines, problems, file)
            lines[fmt_path((*path, key))] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, (*path, i), lines, problems, file)


def _bad_scalar(node: yaml.Node | None) -> int | None:
    """Line of the first scalar PyYAML cannot construct (impossible dates)."""
    loader = YamlLoader("")
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop(0)
        if isinstance(n, yaml.ScalarNode):
            try:
                loader.construct_object(n, deep=True)
            except ValueError:
                return n.start_mark.line + 1
        elif isinstance(n, yaml.MappingNode):
            stack.extend(v for kv in n.value for v in kv)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return None


def _interpolate(data: Any, path: tuple, env: dict[str, str], used: dict[str, str],
                 problems: list[Problem] | None) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` from ``env``; a variable that is not set is a problem
    (unless ``problems`` is None: then it reads as empty)."""
    if isinstance(data, dict):
        return {k: _interpolate(v, (*path, k), env, used, problems) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate(v, (*path, i), env, used, problems) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        used[fmt_path(path)] = name
        if name in env:
            secret(env[name])
            return env[name]
        if default is not None:
            return default
        if problems is not None:
            problems.append(Problem(fmt_path(path), f"environment variable {name} is not set",
                                    f"export {name}=... before running crmsync (or put it in "
                                    f".env)"))
        return ""

    return _VAR.sub(sub, data)


def _dotenv(folder: Path) -> dict[str, str]:
    """Variables from a ``.env`` beside the mapping (the environment wins)."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    env_file = folder / ".env"
    if not env_file.is_file():
        return {}
    try:
        raw = env_file.read_bytes()
        raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read .env ({exc.strerror})",
                                   "check the file's permissions", str(env_file))]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem("", f"not UTF-8 text (byte 0x{raw[exc.start]:02x})",
                                   "save .env as UTF-8 (KEY=value lines)", str(env_file),
                                   raw[:exc.start].count(b"\n") + 1)]) from None

    class DotEnv(BaseSettings):
        model_config = SettingsConfigDict(env_file=env_file, extra="allow")

    return {k.upper(): str(v) for k, v in (DotEnv().model_extra or {}).items()}


# ---------------------------------------------------------------- pydantic errors


def model_keys(model: type[BaseModel]) -> list[str]:
    """The keys a mapping may use for ``model``'s fields (aliases where set), in order."""
    return [f.alias or name for name, f in model.model_fields.items()]


def pydantic_problems(exc: ValidationError, prefix: tuple, model: type[BaseModel] | None,
                      file: str, siblings: Sequence[str] = ()) -> list[Problem]:
    """Problems of a pydantic error. ``siblings``: other keys allowed beside ``model``'s own
    at its top level (a connector's options share their mapping with the config's fields),
    so an unknown key there is matched against both."""
    out = []
    for err in exc.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x in (
            "function-before[_percent(), float]", "function-before[<lambda>(), timedelta]")))
        # discriminated unions add the tag to the location: drop it
        loc = tuple(x for x in loc if x not in ("rfm", "weighted", "clv") or loc.index(x) != 2)
        path = fmt_path((*prefix, *loc))
        kind, msg, fix = err["type"], err["msg"], None
        if kind == "extra_forbidden":
            key = loc[-1]
            parent = _model_at(model, loc[:-1])
            keys = model_keys(parent) if parent else []
            if not loc[:-1]:
                keys = [*siblings, *(k for k in keys if k not in siblings)]
            msg = f"unknown key '{key}'"
            fix = did_you_mean(str(key), keys) or (
                f"allowed here: {', '.join(keys)}" if keys else None)
        elif kind == "missing":
            msg = f"'{loc[-1]}' is required"
            fix = f"add {loc[-1]}:"
        elif kind == "literal_error":
            msg = f"{msg.lower()}, got {err.get('input')!r}"
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif kind == "union_tag_invalid":
            msg = f"unknown type {err.get('input', {}).get('type') if isinstance(err.get('input'), dict) else ''!r}"
            fix = "type is one of: rfm, weighted, clv"
        out.append(Problem(path, msg, fix, file))
    return out


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at ``loc`` inside ``model`` (best effort, for suggestions)."""
    import typing

    cur: Any = model
    skip = False  # the next part is a dict key or list index
    for part in loc:
        if skip or isinstance(part, int):
            skip = False
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return None
        f = cur.model_fields.get(part) or next(
            (f for f in cur.model_fields.values() if f.alias == part), None)
        if f is None:
            return None
        cur = f.annotation
        while typing.get_origin(cur) is not None:
            origin = typing.get_origin(cur)
            args = [a for a in typing.get_args(cur) if a is not type(None)]
            if origin in (dict, list):
                skip = True
                cur = args[-1]
                continue
            cur = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)),
                       args[0] if args else None)
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


# ---------------------------------------------------------------- load


def load(path: str | Path, env: dict[str, str] | None = None, *, pull: bool = True
         ) -> Project:
    """Load a mapping file and check its shape (semantics and the sources' files are
    ``pipeline.checks``: every ``Runner`` runs them before any pull or API call).
    ``pull=False``, for commands that read only the store (``--offline``, ``history``...):
    environment variables that are not set read as empty."""
    path = Path(path)
    file = str(path)
    text = read_text(path)  # bounded: size, UTF-8
    problems: list[Problem] = []
    try:
        node = yaml.compose(text, Loader=YamlLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError([Problem("", f"not valid YAML: {getattr(exc, 'problem', exc)}",
                                   "check indentation and quoting", file,
                                   mark.line + 1 if mark else None)]) from None
    lines: dict[str, int] = {}
    if node is not None:
        check_graph(node, file)  # aliases, nesting: before anything expands them
        _line_map(node, (), lines, problems, file)  # before merge keys (<<) are flattened
    try:
        data = YamlLoader("").construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:  # a tag the safe loader does not build (!!python/object)
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError([Problem("", f"not a plain YAML value: {getattr(exc, 'problem', exc)}",
                                   "remove the tag: a mapping holds only plain values (text, "
                                   "numbers, lists, mappings)", file,
                                   mark.line + 1 if mark else None)]) from None
    except ValueError as exc:  # e.g. an impossible date such as 2026-13-01
        bad = _bad_scalar(node)
        raise ConfigError([Problem("", f"not a valid value: {exc}",
                                   "write a real date (YYYY-MM-DD), or quote the value", file,
                                   bad)]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem("", "the mapping file must be a YAML mapping",
                                   "start with 'version: 1'", file, 1)])
    environment = {**_dotenv(path.parent), **(os.environ if env is None else env)}
    used: dict[str, str] = {}
    data = _interpolate(data, (), environment, used, problems if pull else None)
    project = Project(Mapping.model_construct(), path, lines, {}, used)

    def located(ps: list[Problem]) -> list[Problem]:
        return [Problem(p.path, p.message, p.fix, file, p.line or project.line(p.path),
                        p.severity) for p in ps]

    try:
        project.mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        problems += pydantic_problems(exc, (), Mapping, file)
        raise ConfigError(located(problems)) from None
    for section in ("segments", "suppressions"):
        for name, item in getattr(project.mapping, section).items():
            where_path = f"{section}.{name}.where"
            if item.where is None:
                if section == "segments" or getattr(item, "file", None) is None:
                    problems.append(Problem(f"{section}.{name}", "no 'where' condition",
                                            "add where: { field: F, OP: VALUE }"
                                            + ("" if section == "segments" else " or file: PATH")))
                continue
            cond = parse_condition(item.where, where_path, problems)
            if cond is not None:
                project.conditions[where_path] = cond
    if problems:
        raise ConfigError(located(problems))
    return project
