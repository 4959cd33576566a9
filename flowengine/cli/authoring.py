"""``validate``, ``viz``, ``import-aios``, ``tools`` and ``lsp``: agent files, no model or
database.

Each command imports only what it uses, so ``validate`` and ``viz`` start fast and never
load a model runtime, a web stack or DuckDB (``viz --run`` reads DuckDB, and only then).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowengine.cli.common import (
    EXIT_ERRORS,
    EXIT_OK,
    FORMATTER,
    add_format_option,
    db_path,
    write_file,
)
from flowengine.errors import UsageError

if TYPE_CHECKING:
    import networkx as nx

    from flowengine.agentfile.diagnostics import Diagnostic

AGENT_SUFFIXES = (".yaml", ".yml")
MARKDOWN_SUFFIXES = (".md", ".markdown")
VIZ_SUFFIXES = {
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".md": "mermaid",
    ".markdown": "mermaid",
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
    ".html": "html",
    ".json": "json",
}


def add_parsers(commands: Any) -> None:
    validate = commands.add_parser(
        "validate",
        help="check agent files: schema, graph, templates",
        description="Check agent files and report every problem with its file, line and "
        "column. Exit status: 0 no errors (warnings allowed), 1 errors found, 2 bad usage.",
        epilog="Examples:\n"
        "  flowengine validate agents/\n"
        "  flowengine validate my_agent.yaml --strict\n"
        "  flowengine validate agents/ --format json | jq '.[].code'",
        formatter_class=FORMATTER,
    )
    validate.add_argument(
        "paths", nargs="+", metavar="PATH", help="agent files, or folders to search for *.yaml"
    )
    add_format_option(
        validate,
        ("text", "json"),
        "text",
        "text: one 'FILE:LINE:COL: severity: message [code]' line each (default); "
        "json: a list of objects with file, line, column, severity, code, message",
    )
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors")
    validate.set_defaults(handler=cmd_validate)

    viz = commands.add_parser(
        "viz",
        help="draw an agent's flow graph",
        description="Draw the flow of an agent: process steps as boxes, decisions as "
        "diamonds, terminal steps as rounded ends, decision edges labelled with their "
        "branch. Steps with errors are outlined in red. svg, png and html use Graphviz "
        "'dot'; mermaid, dot and json need nothing else.",
        epilog="Examples:\n"
        "  flowengine viz agents/travel_agent.yaml                 # Mermaid to stdout\n"
        "  flowengine viz agents/travel_agent.yaml -o travel.png   # format from the suffix\n"
        "  flowengine viz agents/math_agent.yaml --format json     # networkx node-link",
        formatter_class=FORMATTER,
    )
    viz.add_argument("agent", metavar="AGENT.yaml", help="the agent file to draw")
    add_format_option(
        viz,
        ("mermaid", "dot", "svg", "png", "html", "json"),
        None,
        "output format (default: from the -o suffix, else mermaid); json is networkx's "
        "node-link data",
    )
    viz.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here instead of stdout ('-' for stdout); png defaults to AGENT.png",
    )
    viz.add_argument(
        "--run",
        metavar="RUN_ID",
        help="draw the path a stored run took ('latest' for the newest run of this agent); "
        "reads the DuckDB file given by --db",
    )
    viz.add_argument("--db", metavar="PATH", help="the DuckDB file for --run (default: as for run)")
    viz.set_defaults(handler=cmd_viz)

    imp = commands.add_parser(
        "import-aios",
        help="convert AIOS agent configs to flowengine YAML",
        description="Convert AIOS agent configs (config.json with a 'flow' of "
        "'Step N:::Type:::text:::label::target' strings) into flowengine YAML, then "
        "validate what was written.",
        epilog="Examples:\n"
        "  flowengine import-aios ../shared/aios/*.json -o imported/\n"
        "  flowengine import-aios MathAgent.json -o -      # print the YAML",
        formatter_class=FORMATTER,
    )
    imp.add_argument("configs", nargs="+", metavar="CONFIG.json", help="AIOS config files")
    imp.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=".",
        help="folder for the YAML files, created if needed (default: .); '-' prints to stdout",
    )
    imp.add_argument("--force", action="store_true", help="overwrite existing files")
    imp.set_defaults(handler=cmd_import_aios)
    _add_tools_parser(commands)

    lsp = commands.add_parser(
        "lsp",
        help="language server for editors (stdio)",
        description="A Language Server Protocol server over stdin/stdout for agent files: "
        "every 'validate' diagnostic as you type (same codes and positions), completion of "
        "step ids, template variables and tool names, go to a step's definition, and hover "
        "for steps and tools. Editors start it; README.md shows the VS Code and Neovim set-up.",
        epilog="Example (what an editor runs):\n  flowengine lsp",
        formatter_class=FORMATTER,
    )
    lsp.add_argument(
        "--stdio", action="store_true", help="talk over stdin/stdout (the default and only way)"
    )
    lsp.set_defaults(handler=cmd_lsp)


def _agent_files(paths: Sequence[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in AGENT_SUFFIXES and p.is_file())
            if not found:
                raise UsageError(f"no *.yaml or *.yml files in folder {raw}")
            yield from found
        elif path.exists():
            yield path
        else:
            raise UsageError(f"no such file or folder: {raw}")


def cmd_validate(args: argparse.Namespace) -> int:
    from flowengine.agentfile.diagnostics import Severity
    from flowengine.graph import validate_file
    from flowengine.testing.spec import is_test_file, load_test_file

    files = list(_agent_files(args.paths))
    # A test file (*.test.yaml, beside its agent) is checked as one: its schema, and the
    # agent, steps, branches and variables it names.
    diagnostics = [
        d
        for f in files
        for d in (load_test_file(f) if is_test_file(f) else validate_file(str(f))).diagnostics
    ]
    if args.strict:
        diagnostics = [d if d.severity is Severity.ERROR else _as_error(d) for d in diagnostics]
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    warnings = len(diagnostics) - errors
    if args.format == "json":
        print(json.dumps([d.as_dict() for d in diagnostics], indent=2, ensure_ascii=False))
    else:
        for diagnostic in diagnostics:
            print(diagnostic.format())
        print(
            f"{len(files)} file{'s' * (len(files) != 1)} checked: "
            f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}",
            file=sys.stderr,
        )
    return EXIT_ERRORS if errors else EXIT_OK


def _as_error(diagnostic: Diagnostic) -> Diagnostic:
    from dataclasses import replace

    from flowengine.agentfile.diagnostics import Severity

    return replace(diagnostic, severity=Severity.ERROR)


def cmd_viz(args: argparse.Namespace) -> int:
    from flowengine.graph import validate_file
    from flowengine.viz import TEXT_FORMATS, GraphvizError, draw

    fmt = args.format or VIZ_SUFFIXES.get(Path(args.output or "").suffix.lower(), "mermaid")
    path = Path(args.agent)
    if path.is_dir():
        raise UsageError(f"{args.agent} is a folder; viz draws one agent file")
    if not path.exists():
        raise UsageError(f"no such file: {args.agent}")
    validated = validate_file(str(path))
    for diagnostic in validated.diagnostics:
        print(diagnostic.format(), file=sys.stderr)
    if validated.graph is None:
        print("flowengine viz: nothing to draw; fix the errors above", file=sys.stderr)
        return EXIT_ERRORS
    problems = validated.steps_with_errors()
    graph = validated.graph
    if args.run:
        graph = _with_run(graph, args)
    elif args.db:
        raise UsageError("--db goes with --run RUN_ID")
    try:
        drawing = draw(graph, fmt, problems)
    except GraphvizError as exc:
        print(f"flowengine viz: {exc}", file=sys.stderr)
        return EXIT_ERRORS
    if fmt == "mermaid":
        from flowengine.viz.mermaid import mermaid_warnings

        for warning in mermaid_warnings(drawing.decode(), graph):
            print(f"flowengine viz: warning: {warning}", file=sys.stderr)
    output = args.output
    if output is None and fmt not in TEXT_FORMATS:
        output = f"{path.stem}.{fmt}"
    if fmt == "mermaid" and Path(output or "").suffix.lower() in MARKDOWN_SUFFIXES:
        # A Markdown file shows a diagram only inside a fenced ```mermaid block.
        drawing = b"```mermaid\n" + drawing.rstrip(b"\n") + b"\n```\n"
    if output in (None, "-"):
        sys.stdout.buffer.write(drawing)
        sys.stdout.flush()
    else:
        write_file(Path(output), drawing)
        print(f"wrote {output}", file=sys.stderr)
    if validated.errors:
        print(
            f"flowengine viz: drawn with {len(validated.errors)} error(s); "
            "steps with errors are outlined in red",
            file=sys.stderr,
        )
    return EXIT_OK


def _with_run(graph: nx.DiGraph, args: argparse.Namespace) -> nx.DiGraph:
    """The graph with the path of the stored run ``args.run`` (DuckDB is read only here)."""
    from flowengine.storage.reader import Records
    from flowengine.viz.overlay import with_run_path

    db = db_path(args)
    run_id = args.run
    with Records(db) as records:
        if run_id == "latest":
            mine = [r for r in records.runs() if r["agent"] == graph.graph["name"]]
            if not mine:
                raise UsageError(f"no stored run of {graph.graph['name']} in {db}")
            run_id = mine[0]["run_id"]
        run = records.run(run_id)
        if run is None:
            raise UsageError(f"no run {run_id!r} in {db}; `flowengine logs` lists the runs")
        if run["agent"] != graph.graph["name"]:
            raise UsageError(f"run {run_id} is of agent {run['agent']}, not {graph.graph['name']}")
        path = [row["step_id"] for row in records.steps(run_id)]
    title = f"run {run_id}: {run['status']} after {len(path)} steps"
    return with_run_path(graph, path, title)


def cmd_lsp(args: argparse.Namespace) -> int:
    # Imported here: pygls stays out of the start-up of every other command.
    from flowengine.lsp.server import main as serve

    return serve()


def cmd_import_aios(args: argparse.Namespace) -> int:
    from flowengine.agentfile.diagnostics import Reporter
    from flowengine.agentfile.schema_validation import schema_file
    from flowengine.graph import validate_file, validate_text
    from flowengine.importers.aios import import_config, output_filename

    to_stdout = args.output == "-"
    out_dir = Path(args.output)
    if not to_stdout and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {args.output} is a file; give a folder")
    for config in args.configs:
        if not Path(config).is_file():
            raise UsageError(f"no such file: {config}")
    schema_ref = os.path.relpath(schema_file(), out_dir.resolve() if not to_stdout else ".")
    failed = False
    converted: list[tuple[str, str, Path]] = []  # agent name, YAML, where it goes
    for config in args.configs:
        report = Reporter(config)
        imported = import_config(config, schema_ref, report)
        for diagnostic in report.diagnostics:
            print(diagnostic.format(), file=sys.stderr)
        failed |= report.has_errors
        if imported.yaml is not None:
            target = out_dir / output_filename(imported.name)
            converted.append((imported.name, imported.yaml, target))
    if not to_stdout:  # refuse before writing anything, so a refusal leaves no half import
        targets = [target for _, _, target in converted]
        for target in targets:
            if targets.count(target) > 1:
                raise UsageError(f"two configs are both named for {target}; import them apart")
            if target.exists() and not args.force:
                raise UsageError(f"{target} exists; pass --force to overwrite it")
    for index, (name, yaml_text, target) in enumerate(converted):
        if to_stdout:
            sys.stdout.write(("---\n" if index else "") + yaml_text)
            checked = validate_text(yaml_text, f"<{name}>")
        else:
            write_file(target, yaml_text.encode())
            print(f"wrote {target}", file=sys.stderr)
            checked = validate_file(str(target))
        for diagnostic in checked.diagnostics:
            print(diagnostic.format(), file=sys.stderr)
        failed |= bool(checked.errors)
    return EXIT_ERRORS if failed else EXIT_OK


def _add_tools_parser(commands: Any) -> None:
    tools = commands.add_parser(
        "tools",
        help="list the tools agents can call (built-ins and plugins)",
        description="List the tools agents can call: each one's description and arguments "
        "(name, type, required or default), and where it comes from: built-in, or a plugin "
        "(an installed package with a 'flowengine.tools' entry point). A plugin that fails "
        "to load is named in a warning and left out.",
        epilog="Examples:\n"
        "  flowengine tools\n"
        "  flowengine tools calculator\n"
        "  flowengine tools --format json | jq '.[].name'",
        formatter_class=FORMATTER,
    )
    tools.add_argument("names", nargs="*", metavar="NAME", help="only these tools")
    add_format_option(
        tools,
        ("text", "json"),
        "text",
        "text (default), or json: a list of objects with name, description, provider, "
        "timeout, arguments and the JSON Schema of the arguments (parameters)",
    )
    tools.set_defaults(handler=cmd_tools)


def cmd_tools(args: argparse.Namespace) -> int:
    from flowengine.agentfile.diagnostics import did_you_mean
    from flowengine.tools.base import describe_type
    from flowengine.tools.catalog import catalog

    found = catalog()
    names = list(found.tools)
    for name in args.names:
        if name not in found.tools:
            raise UsageError(
                f"no tool named {name!r}" + (did_you_mean(name, names) or "; run without a name")
            )
    chosen = [found.tools[name] for name in (args.names or names)]
    if args.format == "json":
        listing = [
            {
                "name": tool.name,
                "description": tool.description,
                "provider": {
                    "plugin": found.providers[tool.name].plugin,
                    "distribution": found.providers[tool.name].distribution,
                    "builtin": found.providers[tool.name].builtin,
                },
                "timeout": tool.timeout,
                "arguments": [
                    {"name": a.name, "type": a.type, "required": a.required}
                    | ({"default": a.default} if a.has_default else {})
                    | ({"description": a.description} if a.description else {})
                    for a in tool.arguments()
                ],
                "parameters": tool.parameters,
                "result": tool.result,
            }
            for tool in chosen
        ]
        print(json.dumps(listing, indent=2, ensure_ascii=False, default=str))
        return EXIT_OK
    blocks = []
    for tool in chosen:
        lines = [f"{tool.name}  ({found.providers[tool.name]})", f"  {tool.description}"]
        arguments = tool.arguments()
        width = max((len(a.name) for a in arguments), default=0)
        type_width = max((len(a.type) for a in arguments), default=0)
        for a in arguments:
            need = "required" if a.required else "optional"
            if a.has_default:
                need += f", default {json.dumps(a.default, default=str)}"
            lines.append(f"    {a.name.ljust(width)}  {a.type.ljust(type_width)}  {need}")
        if not arguments:
            lines.append("    (no arguments)")
        if tool.takes_other_arguments:
            lines.append("    (and any other argument)")
        fields = tool.result_fields()
        if fields:
            # What {{ saved.FIELD }} can read after a step calls it.
            lines.append("  returns:")
            field_width = max(len(f.name) for f in fields)
            lines += [
                f"    {f.name.ljust(field_width)}  {f.type}"
                + (f"  ({f.description})" if f.description else "")
                for f in fields
            ]
        elif tool.result is not None:
            lines.append(f"  returns: {describe_type(tool.result)}")
        else:
            lines.append("  returns: (not declared)")
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return EXIT_OK
