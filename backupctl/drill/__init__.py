"""Restore drills: restore a backup into a throwaway place and check what came back.

`backupctl.drill.base` is the contract (DrillContext, DrillCheck, Driller, the registry and
the stored DrillRecord); `backupctl.drill.run` runs a drill for the CLI and the scheduler;
`backupctl.drill.<source type>` holds one driller per source type, imported lazily.
Nothing heavy is imported here.
"""
