from regexp.cli import entry

entry()
