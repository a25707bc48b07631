"""What a running instance does to its data volume on its own: garbage collection on its schedule, event retention
and the removal of repositories that left the scope, and watching a failed volume until it takes writes again."""
