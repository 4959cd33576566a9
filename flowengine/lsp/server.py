"""The language server: LSP messages over stdio, answered from ``flowengine.lsp.analysis``.

pygls (maintained by the Open Law Library, on ``lsprotocol``'s generated types) does the
JSON-RPC framing, the document sync and the capability negotiation; this module only maps
its requests to the analysis and back.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from flowengine import __version__
from flowengine.agentfile.diagnostics import Diagnostic, Severity
from flowengine.lsp.analysis import (
    Analysis,
    Context,
    Span,
    analyse,
    completions,
    context_at,
    yaml_scalar,
)
from flowengine.lsp.analysis import definition as find_definition
from flowengine.lsp.analysis import hover as hover_text

_KINDS = {
    "step": types.CompletionItemKind.Reference,
    "variable": types.CompletionItemKind.Variable,
    "field": types.CompletionItemKind.Field,
    "tool": types.CompletionItemKind.Function,
    "branch": types.CompletionItemKind.EnumMember,
    "value": types.CompletionItemKind.Value,
}


class AgentServer(LanguageServer):
    """Keeps, per open document, its newest analysis and the newest one whose agent loaded
    (completion and hover use that one while the text does not parse)."""

    def __init__(self) -> None:
        super().__init__("flowengine", __version__)
        self.latest: dict[str, Analysis] = {}
        self.loaded: dict[str, Analysis] = {}

    def refresh(self, uri: str, version: int | None) -> None:
        document = self.workspace.get_text_document(uri)
        analysis = analyse(document.source, path_of(uri))
        self.latest[uri] = analysis
        if analysis.agent is not None:
            self.loaded[uri] = analysis
        codec = document.position_codec
        lines = document.source.splitlines()
        found = []
        for diagnostic in analysis.diagnostics:
            converted = to_lsp(diagnostic, lines)
            # validate counts columns in characters; LSP clients in UTF-16 units (by default).
            converted.range = types.Range(
                start=codec.position_to_client_units(lines, converted.range.start),
                end=codec.position_to_client_units(lines, converted.range.end),
            )
            found.append(converted)
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, version=version, diagnostics=found)
        )

    def context(self, uri: str, position: types.Position) -> tuple[Context, list[str]]:
        """The cursor's context, with the client's position turned into characters."""
        document = self.workspace.get_text_document(uri)
        at = document.position_from_client_units(position)
        text = document.source
        return context_at(text, at.line, at.character), text.splitlines()

    def client_range(self, uri: str, span: Span) -> types.Range:
        lines = self.workspace.get_text_document(uri).source.splitlines()
        codec = self.workspace.get_text_document(uri).position_codec
        return types.Range(
            start=codec.position_to_client_units(lines, types.Position(span.line, span.start)),
            end=codec.position_to_client_units(lines, types.Position(span.line, span.end)),
        )

    def best(self, uri: str) -> Analysis | None:
        return self.loaded.get(uri) or self.latest.get(uri)


def path_of(uri: str) -> str:
    """The file path of a ``file:`` URI, as ``validate`` names the file; else the URI."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def to_lsp(diagnostic: Diagnostic, lines: list[str]) -> types.Diagnostic:
    """A validate diagnostic as an LSP one: same code and start, ending with its word."""
    line, column = diagnostic.line - 1, diagnostic.column - 1
    text = lines[line] if 0 <= line < len(lines) else ""
    end = column
    while end < len(text) and not text[end].isspace():
        end += 1
    return types.Diagnostic(
        range=types.Range(
            start=types.Position(line=line, character=column),
            end=types.Position(line=line, character=max(end, column)),
        ),
        message=diagnostic.message,
        severity=(
            types.DiagnosticSeverity.Error
            if diagnostic.severity is Severity.ERROR
            else types.DiagnosticSeverity.Warning
        ),
        code=diagnostic.code,
        source="flowengine",
    )


def build_server() -> AgentServer:
    """The server with its features registered."""
    server = AgentServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: AgentServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri, params.text_document.version)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: AgentServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri, params.text_document.version)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: AgentServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri, None)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: AgentServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.latest.pop(uri, None)
        ls.loaded.pop(uri, None)
        ls.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=[])
        )

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=[" ", ":", "{", "[", ",", "."]),
    )
    def completion(ls: AgentServer, params: types.CompletionParams) -> types.CompletionList:
        uri = params.text_document.uri
        analysis = ls.best(uri)
        if analysis is None:
            return types.CompletionList(is_incomplete=False, items=[])
        context, _ = ls.context(uri, params.position)
        replaced = ls.client_range(uri, context.replaced)
        as_value = context.replaced is not context.span
        items = [
            types.CompletionItem(
                label=item.label,
                kind=_KINDS.get(item.kind, types.CompletionItemKind.Text),
                detail=item.detail or None,
                text_edit=types.TextEdit(
                    range=replaced,
                    new_text=item.insert or (yaml_scalar(item.label) if as_value else item.label),
                ),
            )
            for item in completions(analysis, context)
        ]
        return types.CompletionList(is_incomplete=False, items=items)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: AgentServer, params: types.DefinitionParams) -> types.Location | None:
        uri = params.text_document.uri
        analysis = ls.best(uri)
        if analysis is None:
            return None
        span = find_definition(analysis, ls.context(uri, params.position)[0])
        return types.Location(uri=uri, range=ls.client_range(uri, span)) if span else None

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: AgentServer, params: types.HoverParams) -> types.Hover | None:
        uri = params.text_document.uri
        analysis = ls.best(uri)
        if analysis is None:
            return None
        found = hover_text(analysis, ls.context(uri, params.position)[0])
        if found is None:
            return None
        return types.Hover(
            contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=found)
        )

    return server


def main() -> int:
    """Serve over stdin/stdout until the editor says exit."""
    build_server().start_io()
    return 0
