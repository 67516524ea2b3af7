"""person: distil a vision-language teacher into tiny person-retrieval students.

The library behind every command of the project (see DESIGN.md): it never parses sys.argv,
never prints from deep inside and never reaches the network.
"""
