pytest_plugins = ["harness.plugin", "reports.plugin"]
