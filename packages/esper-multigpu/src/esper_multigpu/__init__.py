"""esper-multigpu."""
