"""person: distil a vision-language teacher into tiny person-retrieval students.

The library behind every command of the project (see ARCHITECTURE.md): it never parses sys.argv,
never prints from deep inside and never reaches the network. One subpackage per pipeline stage,
each importing only the stages before it:

    data -> teacher -> models -> eval -> train -> export, runtime -> gallery -> web -> demo -> cli

`options` (typed options, the commands' bad-input exit), `errors`, `files`, `vectors` and `distributed` are
shared by all. `demo` runs every stage on the built-in demo; `cli` holds the commands (ARCHITECTURE.md,
"The import rule").
"""
