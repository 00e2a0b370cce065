"""The ``repmon`` command line: one typer app, a thin layer over the runtime and the tools."""
