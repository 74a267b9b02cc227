"""Report writers: report.json (the versioned schema), report.html (for reviewers), junit.xml (for CI)."""
