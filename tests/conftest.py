pytest_plugins = ["emulators.pytest_plugin"]
