"""The verbs Lightning's CLI lacks. Each module here is one verb: `gen-lightning <module> ...` calls its
`main(argv: list[str]) -> int`. Adding a verb = adding a module; cli.py discovers them."""
