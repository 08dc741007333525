"""What people look at, drawn from results on disk: Markdown, PNG and the static HTML page."""
