"""MkDocs hooks: the command reference generated from the command line itself (typer's click tree), so an
option is described once, in the code (the page that holds MARKER gets every command and its options);
and ARCHITECTURE.md served as the docs' architecture page, its links into docs/ made relative to the site."""

from __future__ import annotations

from pathlib import Path

MARKER = "<!-- imgextract-reference -->"
FAMILIES_MARKER = "<!-- imgextract-families -->"


def on_files(files, config):
    from mkdocs.structure.files import File
    root = Path(config.config_file_path).parent
    files.append(File.generated(config, "architecture.md", abs_src_path=str(root / "ARCHITECTURE.md")))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "architecture.md":
        markdown = markdown.replace("](docs/", "](")
    if FAMILIES_MARKER in markdown:
        markdown = markdown.replace(FAMILIES_MARKER, families())
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown


RECONSTRUCTION = {   # the search's loss per adapter (stages/reconstruct.py through models/denoisers/)
    "unet": "the DDPM loss with its scheduler's target (ε, v or x0)",
    "sdxl": "the DDPM loss (ε or v); pooled text and size embeddings held at the empty prompt's",
    "sd3": "rectified flow: ‖v̂ − (n − x0)‖², σ uniform in (0, 1); pooled embeddings held",
    "flux": "rectified flow on packed latents, at the family's embedded guidance; pooled CLIP held",
    "pixart": "the DDPM ε loss, the learned-variance half dropped; T5 mask kept",
}


def families() -> str:
    """The model family registry as a table, read from the registry itself."""
    from imgextract.models.families import FAMILIES
    out = ["| family | pipeline class | denoiser | objective | noise scores in | reconstruction loss | native size from | "
           "steps | guidance | samplers |", "|---|---|---|---|---|---|---|---|---|---|"]
    for f in FAMILIES:
        size = "`default_sample_size` × VAE factor" if f.size_from == "pipeline" else f"{f.denoiser} `sample_size` × VAE factor"
        space = "velocity" if f.objectives == ("flow",) else "ε (v, x0 converted)"
        out.append(f"| {f.title} (`{f.name}`) | {', '.join(f'`{p}`' for p in f.pipelines)} | {f.denoiser} | "
                   f"{', '.join(f.objectives)} | {space} | {RECONSTRUCTION[f.adapter]} | {size} | {f.steps} | "
                   f"{f.guidance:g} | {', '.join(f.schedulers)} |")
    return "\n".join(out)


def _cell(text: str, code: bool = False) -> str:
    """One table cell: on one line, pipes escaped; angle brackets too outside code spans."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if code else text.replace("<", "&lt;").replace(">", "&gt;")


def commands():
    """(path, command, context) for every command, groups' subcommands included, in the CLI's order."""
    import typer

    from imgextract.cli import app
    root = typer.main.get_command(app)
    stack = [(["imgextract"], root, root.make_context("imgextract", [], resilient_parsing=True))]
    while stack:
        path, group, ctx = stack.pop(0)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            sub = cmd.make_context(name, [], resilient_parsing=True, parent=ctx)
            if hasattr(cmd, "list_commands"):
                stack.append((path + [name], cmd, sub))
            else:
                yield path + [name], cmd, sub


def reference() -> str:
    out = []
    for path, cmd, ctx in commands():
        out += [f"## {' '.join(path[1:])}", "", (cmd.help or "").strip(), "", "```",
                cmd.get_usage(ctx).replace("Usage: " + ctx.command_path, " ".join(path)), "```", "",
                "| argument or option | what it does |", "|---|---|"]
        for param in cmd.params:
            record = param.get_help_record(ctx)
            if record:
                out.append(f"| `{_cell(record[0], code=True)}` | {_cell(record[1])} |")
        out.append("")
    return "\n".join(out)
