"""JSON-schema function definitions -> a TypeScript namespace (functionary and chatml_tools).

    // Supported function definitions that should be called when necessary.
    namespace functions {

    // Get the weather
    type get_weather = (_: {
    // City name.
    location: string,
    // Default="celsius".
    unit?: "celsius" | "fahrenheit",
    }) => any;

    } // namespace functions

Parameters not in `required` get `?`; enums become unions of their JSON values; nested objects are
written inline (indented four spaces per level); arrays are `T[]`; `nullable` adds `| null`;
descriptions (a full stop added) and defaults become a `//` comment line above the parameter.

`namespace(tools)` is the Python renderer; `JINJA_MACROS` is the same renderer as Jinja macros for
chat templates (`{{- ts_namespace(tools) -}}`). Both must produce identical text: tests compare them.
"""

from __future__ import annotations

from polaris_dpo.formats.base import dumps, function_of

HEADER = "// Supported function definitions that should be called when necessary.\n"
NUMBER_TYPES = ("integer", "number", "float")


def _indent(depth: int) -> str:
    return "    " * depth


def _needs_parentheses(schema) -> bool:
    """Whether `schema`'s type is a union (so that an array of it must be written `(A | B)[]`)."""
    if not isinstance(schema, dict):
        return False
    return ("enum" in schema or "anyOf" in schema or "oneOf" in schema or bool(schema.get("nullable"))
            or isinstance(schema.get("type"), list))


def _scalar(kind) -> str:
    return "number" if kind in NUMBER_TYPES else str(kind)


def ts_type(schema, depth: int = 0) -> str:
    if not isinstance(schema, dict):
        return "any"
    kind = schema.get("type")
    if "enum" in schema:
        text = " | ".join(dumps(value) for value in schema["enum"])
    elif "anyOf" in schema or "oneOf" in schema:
        text = " | ".join(ts_type(alt, depth) for alt in schema.get("anyOf", schema.get("oneOf")))
    elif isinstance(kind, list):
        text = " | ".join(_scalar(k) for k in kind)
    elif kind == "object" and schema.get("properties"):
        text = ("{\n" + ts_parameters(schema["properties"], schema.get("required") or [], depth + 1)
                + "\n" + _indent(depth) + "}")
    elif kind == "array":
        items = schema.get("items") or {}
        item = ts_type(items, depth)
        text = ("(" + item + ")" if _needs_parentheses(items) else item) + "[]"
    elif kind is None:
        text = "any"
    else:
        text = _scalar(kind)
    if schema.get("nullable"):
        text += " | null"
    return text


def ts_comment(schema) -> str:
    parts = []
    if schema.get("description"):
        description = str(schema["description"])
        parts.append(description if description.endswith(".") else description + ".")
    if "default" in schema:
        parts.append("Default=" + dumps(schema["default"]) + ".")
    return ("// " + " ".join(parts)).replace("\n", " ") if parts else ""


def ts_parameters(properties: dict, required, depth: int = 0) -> str:
    lines = []
    for name, schema in properties.items():
        if not isinstance(schema, dict):
            continue
        comment = ts_comment(schema)
        if comment:
            lines.append(_indent(depth) + comment)
        optional = "" if name in required else "?"
        lines.append(_indent(depth) + name + optional + ": " + ts_type(schema, depth) + ",")
    return "\n".join(lines)


def ts_function(function: dict) -> str:
    text = "// " + function["description"] + "\n" if function.get("description") else ""
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if properties:
        body = ts_parameters(properties, parameters.get("required") or [], 0)
        return text + "type " + function["name"] + " = (_: {\n" + body + "\n}) => any;\n\n"
    return text + "type " + function["name"] + " = () => any;\n\n"


def namespace(tools: list[dict], name: str = "functions") -> str:
    """The TypeScript namespace of the function tools in `tools` (other tool types are skipped)."""
    text = HEADER + "namespace " + name + " {\n\n"
    for tool in tools:
        if "function" in tool or "name" in tool:
            text += ts_function(function_of(tool))
    return text + "} // namespace " + name


def has_functions(tools) -> bool:
    return any("function" in tool or "name" in tool for tool in tools or [])


# The same renderer for chat templates. Dict keys are read with [...] (never `.items` etc.: JSON schemas
# have an `items` key that attribute access would confuse with the dict method).
JINJA_MACROS = r"""
{%- macro ts_scalar(kind) -%}
{{- 'number' if kind in ['integer', 'number', 'float'] else kind -}}
{%- endmacro -%}
{%- macro ts_needs_parentheses(schema) -%}
{{- 'y' if schema is mapping and (schema['enum'] is defined or schema['anyOf'] is defined or schema['oneOf'] is defined or schema['nullable'] or (schema['type'] is defined and schema['type'] is not string and schema['type'] is iterable)) else '' -}}
{%- endmacro -%}
{%- macro ts_type(schema, depth) -%}
{%- if schema is not mapping -%}
{{- 'any' -}}
{%- else -%}
{%- set kind = schema['type'] if schema['type'] is defined else none -%}
{%- if schema['enum'] is defined -%}
{%- for value in schema['enum'] -%}{{- (' | ' if not loop.first else '') + value|tojson -}}{%- endfor -%}
{%- elif schema['anyOf'] is defined or schema['oneOf'] is defined -%}
{%- for alt in (schema['anyOf'] if schema['anyOf'] is defined else schema['oneOf']) -%}{{- (' | ' if not loop.first else '') + ts_type(alt, depth) -}}{%- endfor -%}
{%- elif kind is not none and kind is not string and kind is iterable -%}
{%- for k in kind -%}{{- (' | ' if not loop.first else '') + ts_scalar(k) -}}{%- endfor -%}
{%- elif kind == 'object' and schema['properties'] -%}
{{- '{\n' + ts_parameters(schema['properties'], schema['required'] or [], depth + 1) + '\n' + '    ' * depth + '}' -}}
{%- elif kind == 'array' -%}
{%- set items = schema['items'] or {} -%}
{%- set item = ts_type(items, depth) -%}
{{- ('(' + item + ')' if ts_needs_parentheses(items) else item) + '[]' -}}
{%- elif kind is none -%}
{{- 'any' -}}
{%- else -%}
{{- ts_scalar(kind) -}}
{%- endif -%}
{%- if schema['nullable'] -%}{{- ' | null' -}}{%- endif -%}
{%- endif -%}
{%- endmacro -%}
{%- macro ts_comment(schema) -%}
{%- set ns = namespace(parts=[]) -%}
{%- if schema['description'] -%}
{%- set description = schema['description'] | string -%}
{%- set ns.parts = ns.parts + [description if description.endswith('.') else description + '.'] -%}
{%- endif -%}
{%- if schema['default'] is defined -%}
{%- set ns.parts = ns.parts + ['Default=' + schema['default']|tojson + '.'] -%}
{%- endif -%}
{{- ('// ' + ns.parts|join(' ')).replace('\n', ' ') if ns.parts else '' -}}
{%- endmacro -%}
{%- macro ts_parameters(properties, required, depth) -%}
{%- set ns = namespace(lines=[]) -%}
{%- for name, schema in properties.items() -%}
{%- if schema is mapping -%}
{%- set comment = ts_comment(schema) -%}
{%- if comment -%}{%- set ns.lines = ns.lines + ['    ' * depth + comment] -%}{%- endif -%}
{%- set ns.lines = ns.lines + ['    ' * depth + name + ('' if name in required else '?') + ': ' + ts_type(schema, depth) + ','] -%}
{%- endif -%}
{%- endfor -%}
{{- ns.lines|join('\n') -}}
{%- endmacro -%}
{%- macro ts_function(function) -%}
{{- '// ' + function['description'] + '\n' if function['description'] else '' -}}
{%- set parameters = function['parameters'] if function['parameters'] is mapping else {} -%}
{%- if parameters['properties'] -%}
{{- 'type ' + function['name'] + ' = (_: {\n' + ts_parameters(parameters['properties'], parameters['required'] or [], 0) + '\n}) => any;\n\n' -}}
{%- else -%}
{{- 'type ' + function['name'] + ' = () => any;\n\n' -}}
{%- endif -%}
{%- endmacro -%}
{%- macro ts_namespace(tools) -%}
{{- '// Supported function definitions that should be called when necessary.\nnamespace functions {\n\n' -}}
{%- for tool in tools -%}
{%- if tool['function'] is defined -%}{{- ts_function(tool['function']) -}}
{%- elif tool['name'] is defined -%}{{- ts_function(tool) -}}
{%- endif -%}
{%- endfor -%}
{{- '} // namespace functions' -}}
{%- endmacro -%}
{%- macro has_functions(tools) -%}
{%- set ns = namespace(found=false) -%}
{%- for tool in tools or [] -%}{%- if tool['function'] is defined or tool['name'] is defined -%}{%- set ns.found = true -%}{%- endif -%}{%- endfor -%}
{{- 'y' if ns.found else '' -}}
{%- endmacro -%}
"""
