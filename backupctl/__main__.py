from backupctl.cli.main import run

run()
