#compdef backupctl

_backupctl_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _BACKUPCTL_COMPLETE=complete_zsh backupctl)
}

compdef _backupctl_completion backupctl