"""person: distil a vision-language teacher into tiny person-retrieval students.

The library behind every command of the project (see ARCHITECTURE.md): it never parses sys.argv,
never prints from deep inside and never reaches the network. One subpackage per pipeline stage,
each importing only the stages before it:

    data -> teacher -> models -> eval -> train -> demo, export, runtime -> gallery -> web

`options` (typed options, the commands' bad-input exit), `errors` and `distributed` are shared by all.
"""
